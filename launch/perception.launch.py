"""Launch the xsam_ros perception node.

    ros2 launch xsam_ros perception.launch.py image_topic:=/camera/color/image_raw \\
        depth_topic:=/camera/aligned_depth_to_color/image_raw camera_info_topic:=/camera/color/camera_info

Parameters come from ``params_file`` (default: the package's config/perception.yaml); the
arguments below override the few that are usually set per robot. Topics are connected by
remapping the node's relative names (image, depth, camera_info); the derived names
<image>/compressed and <image>_mouse_left (rqt_image_view clicks) follow the image remapping.
Nothing is installed, downloaded or evaluated here.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

BOOLEAN = ["true", "false"]


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="xsam",
            description="Namespace of the node and its topics (instances, overlay, markers, command, ...)."),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/color/image_raw",
            description="Colour image topic (sensor_msgs/Image rgb8, bgr8, rgba8, bgra8 or mono8); remapped to the "
                        "node's 'image'. With compressed_input:=true the node reads <image_topic>/compressed."),
        DeclareLaunchArgument(
            "depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
            description="Depth image registered to the colour image, same resolution (16UC1 millimetres or 32FC1 "
                        "metres); remapped to the node's 'depth'."),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="/camera/color/camera_info",
            description="sensor_msgs/CameraInfo of the colour image (its K back-projects the depth); remapped to "
                        "the node's 'camera_info'."),
        DeclareLaunchArgument(
            "compressed_input", default_value="false", choices=BOOLEAN,
            description="Read sensor_msgs/CompressedImage (JPEG/PNG) from <image_topic>/compressed instead of raw images."),
        DeclareLaunchArgument(
            "use_depth", default_value="true", choices=BOOLEAN,
            description="Subscribe to depth and camera_info and publish 3D centroids; false for a colour-only camera."),
        DeclareLaunchArgument(
            "image_reliability", default_value="auto", choices=["auto", "reliable", "best_effort"],
            description="Reliability of the image/depth/camera_info subscriptions; auto matches the publishers."),
        DeclareLaunchArgument(
            "model_path", default_value="",
            description="Directory of an X-SAM model (save_pretrained format); empty = the built-in tabletop demo model."),
        DeclareLaunchArgument(
            "backend", default_value="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"],
            description="Inference backend; only torch exists today, the others fall back to it with a log line."),
        DeclareLaunchArgument(
            "device", default_value="auto", choices=["auto", "cpu", "cuda"],
            description="Device for the model: auto = cuda when available, else cpu."),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("xsam_ros"), "config", "perception.yaml"]),
            description="YAML file with the node's parameters (every parameter is listed in config/perception.yaml)."),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=BOOLEAN,
            description="Use the /clock topic (simulation, bag replay) as the node's clock."),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
            description="Log level of the node."),
        DeclareLaunchArgument(
            "use_fastdds_profile", default_value="false", choices=BOOLEAN,
            description="Start the node with FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 2.x: FASTRTPS_...) set to "
                        "fastdds_profile, so that best-effort subscribers of its overlay receive large images."),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=PathJoinSubstitution([FindPackageShare("xsam_ros"), "config", "fastdds_large_images.xml"]),
            description="Fast DDS XML profile used when use_fastdds_profile is true (default: the package's "
                        "32 MB shared-memory profile)."),
    ]

    use_profile = IfCondition(LaunchConfiguration("use_fastdds_profile"))
    set_profile = [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=use_profile),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=use_profile),
    ]

    node = Node(
        package="xsam_ros",
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "image_reliability": ParameterValue(LaunchConfiguration("image_reliability"), value_type=str),
                "compressed_input": ParameterValue(LaunchConfiguration("compressed_input"), value_type=bool),
                "use_depth": ParameterValue(LaunchConfiguration("use_depth"), value_type=bool),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("depth", LaunchConfiguration("depth_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
    )
    return LaunchDescription(arguments + set_profile + [node])
