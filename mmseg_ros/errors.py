"""The project's exception types.

Everything that rejects user input (a malformed message, a bad parameter, a checkpoint that does not fit its card)
raises a subclass of MMSegError with a message naming the offending field and values, so callers can catch one type.
"""


class MMSegError(Exception):
    """Base class of every error mmseg_ros raises on purpose."""


class MessageError(MMSegError):
    """A ROS message (Image, PointCloud2, CameraInfo) cannot be decoded or encoded as asked."""


class ConfigError(MMSegError):
    """A model card, recipe, parameter or command-line value is invalid."""


class CheckpointError(MMSegError):
    """A checkpoint is unreadable or does not match the model card it is loaded into."""


class DataError(MMSegError):
    """A dataset tree or bag is missing, truncated or not in the expected layout."""
