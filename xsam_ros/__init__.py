"""xsam_ros: ROS 2 node package of the X-SAM perception node.

The generated message modules (``xsam_ros.msg``) are installed by CMake into the
Python install directory of the ROS prefix (a colcon ``install/`` tree, or the virtual
environment on machines without ROS), while the hand-written modules may live in the
source tree. ``extend_path`` merges every ``xsam_ros/`` directory found on ``sys.path``
into this one package, so ``import xsam_ros.msg`` and ``import xsam_ros.<module>`` both
work whichever of the two directories Python finds first.
"""

__path__ = __import__('pkgutil').extend_path(__path__, __name__)

__version__ = '0.1.0'
