"""xsam_ros.pipeline without ROS processes: jobs and the tracked command in, outcomes out.

A real predictor (the tiny random-weight X-SAM: its masks are meaningless, so the tests check
the rules, not the masks), real messages built here, a ``worker.TrackingSlot`` for the tracked command
and the recording ``Reporter``; no node, no spinning. What each test expects follows from the
rules in the pipeline's docstring (README "How commands are answered", "Thresholds").
"""

from __future__ import annotations

import numpy as np
import pytest

from engine_fixtures import tiny_predictor
from node_driver import camera_info_msg, depth_msg, image_msg, stamp_header

from xsam_engine.requests import Task
from xsam_engine.tabletop.scenes import generate_scene
from xsam_ros import parameters
from xsam_ros.depth import DepthPairer, instance_geometry
from xsam_ros.msg import SegmentationCommand
from xsam_ros.pipeline import FrameInput, FramePipeline, PipelineSettings, click_job, command_job, text_job
from xsam_ros.worker import TrackingSlot
from xsam_ros.reporting import Reporter


@pytest.fixture(scope="module")
def predictor():
    return tiny_predictor()


@pytest.fixture(scope="module")
def scene():
    return generate_scene(13, 160, 120)


class Setup:
    """A pipeline with its slot, reporter and node parameters (changeable between frames)."""

    def __init__(self, predictor, depth: DepthPairer | None = None, **overrides) -> None:
        self.values = {**parameters.defaults(), "use_depth": depth is not None, **overrides}
        self.slot, self.reporter = TrackingSlot(), Reporter()
        self.pipeline = FramePipeline(self.slot, lambda: PipelineSettings.from_parameters(self.values), self.reporter,
                                      depth, "/cam/image", predictor)
        self.seq = 0

    def job(self, **fields):
        job, error = command_job(SegmentationCommand(**fields), self.values, self.seq)
        assert error == "", error
        return job

    def run(self, image, jobs, tracked=None, sec=None):
        self.seq += 1
        frame = FrameInput(stamp_header(sec if sec is not None else self.seq), image)
        return list(self.pipeline.run(frame, jobs, tracked))


def test_one_shot_answers_carry_the_frame_header_ids_1_to_n_and_max_instances(predictor, scene):
    setup = Setup(predictor, max_instances=3)
    job = setup.job(request_id="all", task=SegmentationCommand.TASK_INSTANCE, vocabulary=["cup", "bowl"],
                    score_threshold=0.0)
    (outcome,) = setup.run(image_msg(scene.image, stamp_header(0)), [job], sec=42)
    assert outcome.success and outcome.header.stamp.sec == 42 and outcome.image_size == (120, 160)
    # Instance with threshold 0 keeps every query (X-SAM's evaluation rule), so max_instances=3 cuts to 3.
    assert [i.instance_id for i in outcome.instances] == [1, 2, 3]
    scores = [i.score for i in outcome.instances]
    assert scores == sorted(scores, reverse=True)
    assert outcome.tracked is None and not outcome.tracking
    assert {"queue", "image_conversion", "mask_encoder", "llm", "decoder"} <= set(outcome.seconds)
    message = outcome.to_msg(publish_label_image=True)
    assert message.success and message.request_id == "all" and message.header.stamp.sec == 42
    assert [i.id for i in message.instances] == [1, 2, 3] and "ros_conversion" in {t.stage for t in message.timings}
    assert setup.reporter.counts["llm_runs"] == 1 and setup.reporter.counts["frames_processed"] == 1


def test_plain_rgb_arrays_are_frames_too(predictor, scene):
    setup = Setup(predictor)
    job = setup.job(request_id="rgb", text="red cup", score_threshold=0.0)
    (outcome,) = setup.run(scene.image, [job])
    assert outcome.success and len(outcome.instances) == 1 and outcome.instances[0].instance_id == 1
    (bad,) = setup.run(scene.image[..., 0], [setup.job(request_id="grey", text="red cup")])
    assert not bad.success and bad.error.startswith("image rejected: an RGB frame must be a non-empty (H, W, 3) uint8")


def test_thresholds_command_then_node_parameter_then_model(predictor, scene):
    """First set wins: the command's threshold, the node's parameter (read per frame), the model's default."""
    setup = Setup(predictor, score_threshold=0.3, mask_threshold=0.4)
    own = setup.job(request_id="own", text="red cup", score_threshold=0.7)
    node = setup.job(request_id="node", text="red cup")
    outcomes = {o.job.request_id: o for o in setup.run(scene.image, [own, node])}
    assert (outcomes["own"].result.thresholds.score, outcomes["own"].result.thresholds.mask) == (0.7, 0.4)
    assert (outcomes["node"].result.thresholds.score, outcomes["node"].result.thresholds.mask) == (0.3, 0.4)
    postprocess = predictor.model.config.postprocess  # the model's defaults (XSamPostProcessConfig)
    setup.values.update(score_threshold=-1.0, mask_threshold=-1.0)
    (default,) = setup.run(scene.image, [setup.job(request_id="model", text="red cup")])
    expected = postprocess.task_score_thresholds.get(Task.REFERRING.value, postprocess.score_threshold)
    assert (default.result.thresholds.score, default.result.thresholds.mask) == (expected, postprocess.mask_threshold)


def test_tracking_reuses_the_condition_keeps_ids_and_reads_thresholds_per_frame(predictor, scene):
    setup = Setup(predictor, score_threshold=0.0)
    track = setup.job(request_id="track", task=SegmentationCommand.TASK_INSTANCE, vocabulary=["cup"], continuous=True)
    (first,) = setup.run(scene.image, [track])
    assert first.success and first.tracked is not None and not first.tracking
    assert setup.slot.tracked is first.tracked and "llm" in first.seconds
    ids = [i.instance_id for i in first.instances]
    assert ids == sorted(ids) and ids[0] == 1
    (second,) = setup.run(scene.image, [], setup.slot.tracked)
    assert second.tracking and second.tracked is first.tracked and "llm" not in second.seconds
    assert [i.instance_id for i in second.instances] == ids  # the same image: every instance keeps its id
    assert setup.reporter.counts["llm_runs"] == 1  # tracking never runs the language model
    setup.values["score_threshold"] = 0.25  # a runtime parameter change applies to the next tracked frame
    (third,) = setup.run(scene.image, [], setup.slot.tracked)
    assert third.result.thresholds.score == 0.25
    assert first.tracked.frames == 2


def test_a_new_continuous_command_replaces_the_tracked_one(predictor, scene):
    setup = Setup(predictor, score_threshold=0.0)
    (old,) = setup.run(scene.image, [setup.job(request_id="old", text="red cup", continuous=True)])
    newer = setup.job(request_id="new", text="blue bowl", continuous=True)
    outcomes = setup.run(scene.image, [newer], setup.slot.tracked)
    assert [o.job.request_id for o in outcomes] == ["new"]  # the old command does not run on this frame
    assert setup.slot.tracked is outcomes[0].tracked and setup.slot.tracked.job is newer
    # A one-shot command does not stop tracking.
    outcomes = setup.run(scene.image, [setup.job(request_id="once", text="red cup")], setup.slot.tracked)
    assert [o.job.request_id for o in outcomes] == ["once", "new"] and outcomes[1].tracking


def test_a_failed_continuous_command_stops_the_older_tracked_one(predictor, scene):
    setup = Setup(predictor, score_threshold=0.0)
    setup.run(scene.image, [setup.job(request_id="tracked", text="red cup", continuous=True)])
    tracked = setup.slot.tracked
    # Refused by the engine on the frame: a click outside the 160x120 image, continuous.
    click, error = click_job(5000.0, 5000.0, stamp_header(1), "clicked_point", setup.values, setup.seq)
    assert error == ""
    click.continuous = True
    outcomes = setup.run(scene.image, [click], tracked)
    assert len(outcomes) == 1 and not outcomes[0].success and "covers no pixel of the 160x120 image" in outcomes[0].error
    assert outcomes[0].stopped is tracked and setup.slot.tracked is None
    assert outcomes[0].error.endswith("; the previously tracked command 'red cup' was stopped (a new continuous "
                                      "command replaces it, also when it fails)")
    # A command older than the tracked one, or a one-shot command, stops nothing.
    older = setup.job(request_id="older", text="red cup", continuous=True)
    setup.run(scene.image, [setup.job(request_id="tracked-2", text="red cup", continuous=True)])
    assert setup.pipeline.fail(older, "late", stamp_header(1)).stopped is None and setup.slot.tracked is not None
    once = setup.job(request_id="once", text="red cup")
    assert setup.pipeline.fail(once, "refused", stamp_header(1)).stopped is None and setup.slot.tracked is not None


@pytest.mark.parametrize("make, error", [
    (lambda header: image_msg(np.zeros((4, 4, 3), np.uint8), header, "rgb8", padding=0).__class__(
        header=header, height=4, width=4, encoding="rgb16", step=24, data=bytes(96)), "unsupported image encoding 'rgb16'"),
    (lambda header: image_msg(np.zeros((4, 4, 3), np.uint8), header).__class__(
        header=header, height=4, width=4, encoding="rgb8", step=12, data=bytes(10)), "data"),
])
def test_a_bad_frame_answers_every_waiting_command_and_the_tracked_one(predictor, scene, make, error):
    setup = Setup(predictor, score_threshold=0.0)
    setup.run(scene.image, [setup.job(request_id="tracked", text="red cup", continuous=True)])
    waiting = setup.job(request_id="waiting", text="red cup")
    outcomes = setup.run(make(stamp_header(77)), [waiting], setup.slot.tracked, sec=77)
    assert [o.job.request_id for o in outcomes] == ["waiting", "tracked"]
    assert all(not o.success and o.error.startswith("image rejected: ") and error in o.error for o in outcomes)
    assert all(o.header.stamp.sec == 77 for o in outcomes)
    assert setup.reporter.counts["frames_rejected"] == 1  # found by decoding: reported by the pipeline
    assert setup.reporter.problems[-1].text.startswith("Rejected an image on /cam/image: ")
    # A frame the node's arrival checks already refused is answered with their reason, reported once (there).
    frame = FrameInput(stamp_header(78), scene.image, rejected="unsupported image encoding 'yuv422'")
    outcomes = list(setup.pipeline.run(frame, [setup.job(request_id="w2", text="red cup")], None))
    assert outcomes[0].error == "image rejected: unsupported image encoding 'yuv422'"
    assert setup.reporter.counts["frames_rejected"] == 1


def test_commands_are_checked_once_with_the_node_vocabulary(predictor):
    values = {**parameters.defaults(), "default_vocabulary": ["cup", "bowl"]}
    job, error = text_job("  track the red cup ", stamp_header(1), values, 0)
    assert error == "" and job.continuous and job.prompt == "track the red cup" and job.request.text == "red cup"
    job, error = text_job("segment everything", stamp_header(1), values, 0)  # panoptic: stuff classes merged in
    assert error == "" and job.request.vocabulary == ("cup", "bowl", "table")
    job, error = command_job(SegmentationCommand(request_id="bad", task=42, text="cup"), values, 0)
    assert error == "unknown task 42" or error.startswith("unknown task 42"), error
    assert job.request is None and job.prompt == "cup"


def test_3d_per_instance_from_the_paired_depth(predictor, scene):
    depth = DepthPairer()
    setup = Setup(predictor, depth, score_threshold=0.0)
    header = stamp_header(5)
    depth.add_camera_info(camera_info_msg(scene.camera, header))
    depth.add_depth(depth_msg(scene.depth, header))
    job = setup.job(request_id="3d", task=SegmentationCommand.TASK_INSTANCE, vocabulary=["cup"])
    (outcome,) = setup.run(image_msg(scene.image, header), [job], sec=5)
    registered, _ = depth.registered(header, (120, 160), PipelineSettings.from_parameters(setup.values).depth)
    expected = [instance_geometry(i, registered, PipelineSettings.from_parameters(setup.values).depth)[0]
                for i in outcome.instances]
    assert len(outcome.geometries) == len(outcome.instances) and "depth_3d" in outcome.seconds
    for got, want in zip(outcome.geometries, expected):
        assert (got is None) == (want is None)
        if got is not None:
            np.testing.assert_allclose(got.centroid, want.centroid)
    # A frame without its depth image: no 3D, and the reporter says why (counted as depth_missing).
    (later,) = setup.run(image_msg(scene.image, stamp_header(6)), [setup.job(request_id="no-depth", text="red cup")], sec=6)
    assert later.geometries == [None] * len(later.instances)
    assert setup.reporter.counts["depth_missing"] == 1
