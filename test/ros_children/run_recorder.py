"""Child process for test_recording: runs ``glus-ros record`` with argv[2:].

argv[1] is a lifetime in seconds: the child sends itself SIGINT then (like Ctrl-C), so a crashed test
leaves nothing behind. Its exit status is the command's.
"""

import os
import signal
import sys
import threading

from glus_ros.cli import main

if __name__ == "__main__":
    timer = threading.Timer(float(sys.argv[1]), lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    sys.exit(main(["record", *sys.argv[2:]]))
