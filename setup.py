"""pip metadata for the Python parts of xsam_ros (the engine and the node code).

This is NOT how the package is built on a robot: there, package.xml declares
build_type ament_cmake and colcon uses CMakeLists.txt, which also generates the
messages (see README, "Install on a ROS 2 robot"). On a machine without ROS,
`make setup` builds the messages and puts this source tree on sys.path; it does not
use this file. setup.py serves `pip install .` of the engine into some other Python
environment (xsam_ros.msg then comes from a ROS install, not from pip).
"""

from setuptools import find_packages, setup

setup(
    name='xsam_ros',
    version='0.1.0',
    description='X-SAM "any segmentation" for ROS 2 robots: engine and perception node',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(
        include=['xsam_engine', 'xsam_engine.*', 'xsam_ros', 'xsam_ros.*']),
    # Model data shipped next to the engine code (xsam_engine/default_model/).
    package_data={
        'xsam_engine': [
            '*.json', '*.yaml', '*.txt', '*.safetensors',
            'default_model/*', 'default_model/*/*',
        ],
    },
    include_package_data=True,
    # Ranges valid on Python 3.10-3.12 (pip picks transformers <= 5.20 on 3.10).
    # The exact versions the tests use are in requirements/dev.txt.
    install_requires=[
        'numpy>=1.21',
        'opencv-python-headless>=4.5',
        'PyYAML>=5.4',
        'torch>=2.4,<3',
        'transformers>=5.0,<6',
        'safetensors>=0.4.3',
        'scipy>=1.8',
        'tqdm>=4.64',
    ],
    extras_require={
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18'],
        'test': ['pytest>=7'],
    },
    entry_points={
        'console_scripts': [
            'perception_node = xsam_ros.perception_node:main',
        ],
    },
    zip_safe=False,
)
