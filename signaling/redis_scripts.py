"""The Lua scripts that change rooms in Redis atomically (join, leave, reap a dead instance), for ``signaling.redis_rooms``.

Each runs as one Redis command, so two instances joining the same room at once see one order, and the
notifications a script publishes leave in the order the room changed. Keys (``P`` is the prefix,
``kpcall`` by default)::

    P:room:<room>         hash   peer id -> member JSON {"i": instance, "role", "ip", "o": original, "t": ticketed, "c": control}
    P:rooms               set    rooms that have members
    P:ip:<address>        hash   room -> members of that client address in it (rooms per address)
    P:members:<instance>  set    "<room>\\n<peer id>" of the members an instance holds (to reap it)
    P:alive:<instance>    string the instance's heartbeat, expires after the heartbeat TTL
    P:instances           set    instances that registered (the reaper checks their alive keys)

and one pub/sub channel per instance, ``P:inst:<instance>``, carrying envelopes to its members: a relayed
message as ``m\\n<room>\\n<peer id>\\n<encoded server message>`` (the hot path: no JSON around it), and room
events as JSON objects: ``k`` = "joined" (``role``, ``peers`` [[id, role, o, c], ...]), "joined_peer" (``id``,
``role``, ``o``, ``c``), "left" (``id``, ``role``, ``why``) or "evict" (``why``), each with ``r`` (room) and ``to``
(peer id). ``o`` and ``c`` are the member's grants (original, control; true/false), which the instance turns into
a viewer's ``grants``; a member written without ``c`` (by an instance from before it) has no control. Room names
and peer ids never hold a newline (``messages.ROOM_PATTERN``, ``PEER_ID_PATTERN``).

Every script takes the prefix as ARGV[1]; keys are built inside the script, so this needs a single Redis
(or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

_COMMON = r"""
local P = ARGV[1]
local function room_key(room) return P .. ':room:' .. room end
local function send(inst, env) redis.call('PUBLISH', P .. ':inst:' .. inst, cjson.encode(env)) end
local function remove(room, peer, mm, reason)
  local rkey = room_key(room)
  if redis.call('HDEL', rkey, peer) == 0 then return false end
  redis.call('SREM', P .. ':members:' .. mm.i, room .. '\n' .. peer)
  local ipkey = P .. ':ip:' .. mm.ip
  if redis.call('HINCRBY', ipkey, room, -1) <= 0 then redis.call('HDEL', ipkey, room) end
  local rest = redis.call('HGETALL', rkey)
  if #rest == 0 then redis.call('SREM', P .. ':rooms', room) end
  for j = 1, #rest, 2 do
    local other = cjson.decode(rest[j + 1])
    send(other.i, {k = 'left', r = room, to = rest[j], id = peer, role = mm.role, why = reason})
  end
  return true
end
"""

# ARGV: prefix, room, peer id, member JSON, max rooms, max peers per room, max rooms per address, exclusive role (1/0),
# max participants of a call (room_store.MAX_PARTICIPANTS).
# Returns {'ok'} or a refusal: {'server_full'}, {'over_quota', rooms present}, {'room_full'}, {'call_full'},
# {'role_taken', holder id}.
JOIN = _COMMON + r"""
local room, peer, mjson = ARGV[2], ARGV[3], ARGV[4]
local max_rooms, max_peers, max_ip = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local me = cjson.decode(mjson)
local rkey = room_key(room)
local members = redis.call('HGETALL', rkey)
if #members == 0 and redis.call('SCARD', P .. ':rooms') >= max_rooms then return {'server_full'} end
local ipkey = P .. ':ip:' .. me.ip
if redis.call('HEXISTS', ipkey, room) == 0 then
  local present = redis.call('HLEN', ipkey)
  if present >= max_ip then return {'over_quota', tostring(present)} end
end
if #members / 2 >= max_peers then return {'room_full'} end
if me.role == 'participant' then
  local n = 0
  for j = 2, #members, 2 do
    if cjson.decode(members[j]).role == 'participant' then n = n + 1 end
  end
  if n >= tonumber(ARGV[9]) then return {'call_full'} end
end
local holder, holder_m = nil, nil
if ARGV[8] == '1' then
  for j = 1, #members, 2 do
    local mm = cjson.decode(members[j + 1])
    if mm.role == me.role then holder, holder_m = members[j], mm end
  end
end
if holder and me.t ~= true then return {'role_taken', holder} end
if holder then
  remove(room, holder, holder_m, 'replaced')
  send(holder_m.i, {k = 'evict', r = room, to = holder, why = 'replaced'})
  members = redis.call('HGETALL', rkey)
end
local peers = {}
for j = 1, #members, 2 do
  local mm = cjson.decode(members[j + 1])
  peers[#peers + 1] = {members[j], mm.role, mm.o == true, mm.c == true}
end
send(me.i, {k = 'joined', r = room, to = peer, role = me.role, peers = peers})
for j = 1, #members, 2 do
  send(cjson.decode(members[j + 1]).i, {k = 'joined_peer', r = room, to = members[j], id = peer, role = me.role,
                                        o = me.o == true, c = me.c == true})
end
redis.call('HSET', rkey, peer, mjson)
redis.call('SADD', P .. ':rooms', room)
redis.call('SADD', P .. ':members:' .. me.i, room .. '\n' .. peer)
redis.call('HINCRBY', ipkey, room, 1)
return {'ok'}
"""

# ARGV: prefix, room, source peer id, destination peer id, the encoded message, the message's stream ('' for none).
# One round trip per relay: looks both up,
# applies the relay rule (room_store.check_link, the same table; tests/test_signaling_redis.py checks they agree) and
# publishes to the destination's instance. Returns {'ok'}, {'not_joined'}, {'unknown_peer'} or {'forbidden'}.
RELAY = _COMMON + r"""
local room, src_id, dst_id = ARGV[2], ARGV[3], ARGV[4]
local both = redis.call('HMGET', room_key(room), src_id, dst_id)
if not both[1] then return {'not_joined'} end
if not both[2] or src_id == dst_id then return {'unknown_peer'} end
local src, dst = cjson.decode(both[1]), cjson.decode(both[2])
local linked = false
if (src.role == 'sender' and dst.role == 'receiver') or (src.role == 'receiver' and dst.role == 'sender') then linked = true
elseif (src.role == 'receiver' and dst.role == 'viewer') or (src.role == 'viewer' and dst.role == 'receiver') then linked = true
elseif src.role == 'sender' and dst.role == 'viewer' then linked = dst.o == true
elseif src.role == 'viewer' and dst.role == 'sender' then linked = src.o == true
elseif (src.role == 'participant' and dst.role == 'viewer') or (src.role == 'viewer' and dst.role == 'participant') then linked = true
elseif src.role == 'participant' and dst.role == 'participant' then linked = ARGV[6] == src_id or ARGV[6] == dst_id
end
if not linked then return {'forbidden'} end
redis.call('PUBLISH', P .. ':inst:' .. dst.i, 'm\n' .. room .. '\n' .. dst_id .. '\n' .. ARGV[5])
return {'ok'}
"""

# ARGV: prefix, room, peer id, reason. Returns 1 if the member was there, 0 if it was gone already.
LEAVE = _COMMON + r"""
local mjson = redis.call('HGET', room_key(ARGV[2]), ARGV[3])
if not mjson then return 0 end
remove(ARGV[2], ARGV[3], cjson.decode(mjson), ARGV[4])
return 1
"""

# ARGV: prefix, instance. Removes a dead instance's members ("disconnected" to the others) unless its alive key is back.
# Returns the members removed, or -1 if the instance is alive.
REAP = _COMMON + r"""
local dead = ARGV[2]
if redis.call('EXISTS', P .. ':alive:' .. dead) == 1 then return -1 end
redis.call('SREM', P .. ':instances', dead)
local n = 0
for _, entry in ipairs(redis.call('SMEMBERS', P .. ':members:' .. dead)) do
  local nl = string.find(entry, '\n', 1, true)
  local room, peer = string.sub(entry, 1, nl - 1), string.sub(entry, nl + 1)
  local mjson = redis.call('HGET', room_key(room), peer)
  if mjson then
    local mm = cjson.decode(mjson)
    if mm.i == dead and remove(room, peer, mm, 'disconnected') then n = n + 1 end
  end
end
redis.call('DEL', P .. ':members:' .. dead)
return n
"""
