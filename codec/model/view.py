"""Free view: the receiver turns the re-rendered face (face the camera, a chosen pose, or offsets)."""

from __future__ import annotations

from dataclasses import dataclass

from codec.motion import MotionParams

_MODES = ("frontal", "absolute", "offset")
_LIMITS_DEG = {"yaw": 90.0, "pitch": 90.0, "roll": 180.0}


@dataclass(frozen=True)
class ViewControl:
    """mode "frontal": yaw = pitch = roll = 0 (translation and expression kept); "absolute": the given
    angles replace the sender's; "offset": the given angles are added to the sender's. Degrees."""

    mode: str = "offset"
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"view mode {self.mode!r} is not one of {_MODES}")
        for name, limit in _LIMITS_DEG.items():
            value = getattr(self, name)
            if not -limit <= value <= limit:
                raise ValueError(f"view {name}={value} is outside ±{limit:g} degrees")

    @staticmethod
    def parse(text: str) -> ViewControl:
        """"frontal", "yaw=10,pitch=-5,roll=0" (absolute) or "offset:yaw=10" (added to the sender's)."""
        text = text.strip()
        if text == "frontal":
            return ViewControl("frontal")
        mode = "absolute"
        if text.startswith("offset:"):
            mode, text = "offset", text[len("offset:"):]
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition("=")
            if not sep or name.strip() not in _LIMITS_DEG:
                raise ValueError(f"bad view {part!r}: use 'frontal', 'yaw=..,pitch=..,roll=..' or 'offset:yaw=..'")
            try:
                values[name.strip()] = float(raw)
            except ValueError:
                raise ValueError(f"bad view angle {raw!r} in {part!r}: expected a number of degrees") from None
        if not values:
            raise ValueError(f"bad view {text!r}: use 'frontal', 'yaw=..,pitch=..,roll=..' or 'offset:yaw=..'")
        return ViewControl(mode, **values)

    def apply(self, motion: MotionParams) -> MotionParams:
        if self.mode == "frontal":
            yaw = pitch = roll = 0.0
        elif self.mode == "absolute":
            yaw, pitch, roll = self.yaw, self.pitch, self.roll
        else:
            yaw, pitch, roll = motion.yaw + self.yaw, motion.pitch + self.pitch, motion.roll + self.roll
        return MotionParams(yaw, pitch, roll, motion.translation, motion.expression, motion.present)
