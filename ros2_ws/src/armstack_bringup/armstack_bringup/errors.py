"""The one error type of the launcher: a launch file or its arguments cannot be run."""


class LaunchError(Exception):
    """A launch file is invalid, uses something unsupported, or cannot be evaluated.

    `where` names the file and the entity ("sim.launch.yaml: launch[2]/node[1]") so the message
    points at the line of YAML to fix.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)

    def at(self, where: str) -> "LaunchError":
        """The same error located at `where`, unless it already names a location."""
        return self if self.where else LaunchError(self.message, where)
