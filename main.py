"""Notification Console entry point: the GUI, or one headless CLI command.

    python main.py --demo                      # the console on the demo workspace
    python main.py --config FILE status --json # a CLI command
    python main.py --demo --screenshot out.png --page failed
"""
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from app.cli import run
    code = run(argv)
    if code != -1:
        return code
    from ui.launch import launch
    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
