"""The one exception type users see: a clear, one-line message, never a traceback."""


class SceneMakerError(Exception):
    """A user-facing error: bad input, a missing file, an invalid config or scene.

    The CLI prints ``str(err)`` on one line and exits with status 2; the ROS node logs it and
    skips the frame.
    """
