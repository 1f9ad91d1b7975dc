"""Child process for test_camera_source: runs the camera_source node's main() with the given ROS arguments.

argv[1] is a lifetime in seconds: the child sends itself SIGINT then (like Ctrl-C), so a crashed test
leaves nothing behind; argv[2:] are passed to main (e.g. --ros-args -p source:=synth).
"""

import os
import signal
import sys
import threading

from glus_ros.ros.camera_source import main

if __name__ == "__main__":
    timer = threading.Timer(float(sys.argv[1]), lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    sys.exit(main([sys.argv[0], *sys.argv[2:]]))
