"""What the held-out evaluation feeds its metrics: each ground-truth instance once, void stays void.

Issue 14 found two faults in the evaluation's inputs (the metric code itself agrees with
pycocotools and panopticapi):
- VGD: two prompted regions of one class each listed every instance of that class, and both
  regions then mapped to the same class id, so an instance was a target twice (18 of 96 target
  masks on 30 scenes). The official VGD data (X-SAM AAAI26_Archive
  `xsam/xsam/dataset/vgdseg_dataset.py`, `_sample_cats`; `xsam.py`
  `_get_vprompt_feats_and_masks`) indexes *categories* by region: one region per category, its
  prompt from one instance of it, every instance of it a target of that region.
- Semantic: -1 (void: since issue 12 a class below the score threshold leaves its pixels void)
  indexed `vocabulary_ids[-1]`, the last vocabulary class.
"""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine.evaluation.evaluate import (
    IGNORE_LABEL,
    PREDICTED_VOID,
    _Collected,
    _collect,
    _report,
    to_global_labels,
    vgd_region_classes,
)
from xsam_engine.requests import PromptKind, Task
from xsam_engine.results import SegmentationResult
from xsam_engine.tabletop import ALL_CLASSES, generate_scene, sample_task

# Scenes with two or three objects of one class: the case that duplicated targets.
CROWDED = [("cup", "red"), ("cup", "blue"), ("bowl", "green"), ("bowl", "white")]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", list(PromptKind))
def test_vgd_targets_each_instance_once_and_regions_index_categories(seed: int, kind: PromptKind) -> None:
    scene = generate_scene(seed, include=CROWDED)
    rng = np.random.default_rng(seed)
    for _ in range(6):  # several draws per scene: 1 to 3 regions, any objects
        sample = sample_task(scene, Task.VGD, rng, prompt_kind=kind)
        assert len(set(sample.instance_ids)) == len(sample.instance_ids), sample.instance_ids
        categories = {}
        for label, instance_id in zip(sample.target_labels, sample.instance_ids):
            categories.setdefault(label, set()).add(scene.object(instance_id).category)
        # one category per region, distinct across regions
        assert all(len(names) == 1 for names in categories.values())
        flat = [next(iter(names)) for names in categories.values()]
        assert len(set(flat)) == len(flat) == len(sample.request.regions)
        # every instance of a prompted category is a target (the official VGD truth)
        for name in flat:
            expected = {o.instance_id for o in scene.objects if o.category == name}
            assert expected <= set(sample.instance_ids)


def test_vgd_evaluation_truth_has_each_instance_once() -> None:
    """The evaluation's VGD ground truth on a crowded scene: one annotation per target instance,
    labelled with its class; a hand-made sample whose regions share a class is refused."""
    scene = generate_scene(3, include=CROWDED)
    rng = np.random.default_rng(0)
    collected = _Collected()
    total = 0
    for _ in range(8):
        sample = sample_task(scene, Task.VGD, rng, prompt_kind=PromptKind.BOX)
        empty = SegmentationResult(task=Task.VGD, instances=[], labels=sample.labels, image_size=scene.image.shape[:2])
        _collect(collected, sample, empty, scene, "")
        total += len(sample.instance_ids)
    truths = collected.instances[Task.VGD][1]
    assert sum(len(t) for t in truths) == total
    for truth in truths:
        keys = [(a.category_id, a.mask.tobytes()) for a in truth]
        assert len(set(keys)) == len(keys)
    cups = [o.instance_id for o in scene.objects if o.category == "cup"]
    assert len(cups) >= 2
    shared = sample_task(scene, Task.VGD, rng, prompt_kind=PromptKind.BOX)
    shared.target_labels, shared.instance_ids = [0, 1], cups[:2]
    shared.target_masks = [scene.mask(i) for i in cups[:2]]
    with pytest.raises(ValueError, match="distinct categories"):
        vgd_region_classes(shared, scene)
    shared.target_labels, shared.instance_ids = [0, 1], [cups[0], cups[0]]
    with pytest.raises(ValueError, match="two regions"):
        vgd_region_classes(shared, scene)


def test_void_semantic_pixels_stay_void() -> None:
    """Vocabulary (table, cup, bowl) -> global ids (ALL_CLASSES order). A -1 pixel must become the
    void value (prediction: -1, a miss; truth: 255, ignored), never vocabulary_ids[-1] = bowl."""
    vocabulary = ("table", "cup", "bowl")
    ids = np.array([ALL_CLASSES.index(name) for name in vocabulary])
    label_map = np.array([[0, 1], [2, -1]], dtype=np.int32)
    expected = np.array([[ids[0], ids[1]], [ids[2], PREDICTED_VOID]])
    np.testing.assert_array_equal(to_global_labels(label_map, ids, PREDICTED_VOID), expected)
    np.testing.assert_array_equal(to_global_labels(np.full((3, 3), -1), ids, IGNORE_LABEL), np.full((3, 3), 255))
    with pytest.raises(ValueError, match="index 3"):
        to_global_labels(np.array([[3]]), ids, PREDICTED_VOID)


def test_void_semantic_prediction_is_a_miss_in_the_report() -> None:
    """A semantic result that is all void on a scene: every labelled pixel is a miss, so mIoU 0.
    Before the fix the void pixels were read as the last vocabulary class and scored its IoU."""
    scene = generate_scene(5)
    sample = sample_task(scene, Task.SEMANTIC, np.random.default_rng(0))
    collected = _Collected()
    void = SegmentationResult(task=Task.SEMANTIC, instances=[], labels=sample.labels, image_size=scene.image.shape[:2],
                              semantic_map=np.full(scene.image.shape[:2], -1, dtype=np.int32))
    _collect(collected, sample, void, scene, "")
    assert (collected.semantic[0][0] == PREDICTED_VOID).all()
    metrics = _report(collected, 1, 0, scene.image.shape[:2])["metrics"]
    assert metrics["semantic"]["mIoU"] == 0.0 and metrics["semantic"]["pixel_accuracy"] == 0.0
    # the truth's last class painted everywhere instead scores that class's share
    last = len(sample.labels) - 1
    collected = _Collected()
    painted = SegmentationResult(task=Task.SEMANTIC, instances=[], labels=sample.labels, image_size=scene.image.shape[:2],
                                 semantic_map=np.full(scene.image.shape[:2], last, dtype=np.int32))
    _collect(collected, sample, painted, scene, "")
    share = (sample.semantic_map == last).sum() / (sample.semantic_map >= 0).sum()
    assert _report(collected, 1, 0, scene.image.shape[:2])["metrics"]["semantic"]["pixel_accuracy"] == pytest.approx(share)


def _coco_reference_ap(predictions, truths, categories) -> tuple[float, float, float]:
    """pycocotools' COCOeval (segm) on the same masks: (AP, AP50, AP75)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded["counts"] = encoded["counts"].decode("ascii")
        return encoded

    height, width = truths[0][0].mask.shape
    dataset = {"images": [], "annotations": [], "categories": [{"id": c} for c in categories]}
    results = []
    for image_id, (image_preds, image_truths) in enumerate(zip(predictions, truths), start=1):
        dataset["images"].append({"id": image_id, "height": height, "width": width})
        for truth in image_truths:
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": truth.category_id,
                "segmentation": rle(truth.mask), "area": float(truth.mask.sum()), "iscrowd": 0,
                "bbox": list(mask_utils.toBbox(rle(truth.mask))),
            })
        results += [{"image_id": image_id, "category_id": p.category_id, "segmentation": rle(p.mask), "score": p.score}
                    for p in image_preds]
    ground_truth = COCO()
    ground_truth.dataset = dataset
    ground_truth.createIndex()
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1]), float(evaluator.stats[2])


def test_mask_ap_agrees_with_pycocotools_on_tabletop_instances() -> None:
    """Our COCO mask AP = pycocotools' on the evaluation's own kind of input: instance truth of 12
    scenes and predictions made from it (shifted, eroded, merged with a neighbour, relabelled, missed,
    spurious), with random scores. Objects are far larger than COCO's "small" range, so area range
    "all" (ours) equals pycocotools' first summary number."""
    import cv2

    from xsam_engine.evaluation.metrics import InstanceAnnotation, InstancePrediction, mask_ap

    rng = np.random.default_rng(7)
    predictions, truths, categories = [], [], set()
    for seed in range(12):
        scene = generate_scene(seed)
        image_truths = [InstanceAnnotation(scene.mask(o.instance_id), o.class_id) for o in scene.objects]
        categories |= {t.category_id for t in image_truths}
        image_preds = []
        for truth in image_truths:
            mask = truth.mask
            variant = rng.integers(6)
            if variant == 1:
                mask = np.roll(mask, int(rng.integers(-6, 7)), axis=int(rng.integers(2)))
            elif variant == 2:
                mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            elif variant == 3:
                mask = mask | image_truths[int(rng.integers(len(image_truths)))].mask
            elif variant == 4:
                continue  # missed
            category = truth.category_id if rng.random() > 0.15 else int(rng.integers(8))
            categories.add(category)
            image_preds.append(InstancePrediction(mask, category, float(rng.random())))
        if rng.random() < 0.5:  # a spurious detection
            spurious = np.zeros_like(scene.table_mask())
            spurious[10:40, 10:40] = True
            image_preds.append(InstancePrediction(spurious, image_truths[0].category_id, float(rng.random())))
        predictions.append(image_preds)
        truths.append(image_truths)
    ours = mask_ap(predictions, truths)
    reference = _coco_reference_ap(predictions, truths, sorted(categories))
    assert (ours.ap, ours.ap50, ours.ap75) == pytest.approx(reference, abs=1e-9)
    assert 0.2 < ours.ap50 < 0.95  # a case with real misses, not a trivial perfect one
