"""A participant of a two-way call: composes the sender and the receivers (one per other participant) on one signaling connection.

The top of the package graph: participant → sender, receiver → signaling, codec (never the other way).
"""
