"""Launch the xsam_ros perception node (a managed lifecycle node) and, with autostart, configure and activate it.

    ros2 launch xsam_ros perception.launch.py image_topic:=/camera/color/image_raw \\
        depth_topic:=/camera/aligned_depth_to_color/image_raw camera_info_topic:=/camera/color/camera_info

Parameters come from ``params_file`` (default: the package's config/perception.yaml). The launch
arguments that set node parameters (model_path, device, backend, ...) are generated from the
node's parameter table, ``xsam_ros.parameters.launch_arguments()`` (name, default, description,
choices), so they cannot drift from the node; they override the file. Topics are connected by
remapping the node's relative names (image, depth, camera_info); the derived names
<image>/compressed and <image>_mouse_left (rqt_image_view clicks) follow the image remapping.

autostart:=true (default) drives the standard lifecycle transitions with launch_ros events:
configure once the node is up, activate when it reaches "inactive" from "configuring". This
works the same on Humble, Jazzy and Kilted (Humble's launch_ros LifecycleNode has no
``autostart`` argument, so it is not used). autostart:=false leaves the node unconfigured for a
lifecycle manager or ``ros2 lifecycle set``. Nothing is installed, downloaded or evaluated here.
"""

import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from xsam_ros.parameters import launch_arguments

BOOLEAN = ["true", "false"]


def generate_launch_description():
    generated = launch_arguments()  # the node's parameter table: name, default, description, choices
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
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("xsam_ros"), "config", "perception.yaml"]),
            description="YAML file with the node's parameters (every parameter is listed in config/perception.yaml)."),
        DeclareLaunchArgument(
            "autostart", default_value="true", choices=BOOLEAN,
            description="Configure and activate the lifecycle node at start (true), or leave it unconfigured for a "
                        "lifecycle manager / `ros2 lifecycle set` (false)."),
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
    ] + [
        DeclareLaunchArgument(argument.name, default_value=argument.default, description=argument.description,
                              choices=list(argument.choices) if argument.choices else None)
        for argument in generated
    ]

    use_profile = IfCondition(LaunchConfiguration("use_fastdds_profile"))
    set_profile = [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=use_profile),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile"),
                               condition=use_profile),
    ]

    overrides = {argument.name: ParameterValue(LaunchConfiguration(argument.name), value_type=argument.value_type)
                 for argument in generated}
    overrides["use_sim_time"] = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    node = LifecycleNode(
        package="xsam_ros",
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[
            ("image", LaunchConfiguration("image_topic")),
            ("depth", LaunchConfiguration("depth_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
    )

    # autostart: configure now; activate once configuring has reached inactive (not after a later deactivate).
    autostart = IfCondition(LaunchConfiguration("autostart"))
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(node),
                transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))]),
        condition=autostart)
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(node),
                          transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE),
        condition=autostart)
    return LaunchDescription(arguments + set_profile + [node, activate_when_configured, configure])
