"""The enhancement layer: a low-resolution picture of the face crop, coded by SVT-AV1, that the
receiver's generator takes as an extra input beside the motion (see ``lowres_codec``)."""
