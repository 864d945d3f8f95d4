"""Natural robot commands reach the right task and template; the tracker keeps ids."""

from __future__ import annotations

import numpy as np
import pytest

from xsam_engine import Instance, Task
from xsam_engine.commands import contains_words, is_tracking_command, parse_command, singular, words
from xsam_engine.prompts import chat_prompt, question_for
from xsam_engine.tracking import InstanceTracker


@pytest.mark.parametrize(
    "command, task, text",
    [
        ("grasp the red cup", Task.REFERRING, "red cup"),
        ("Pick up the blue bowl.", Task.REFERRING, "blue bowl"),
        ("find the mug", Task.REFERRING, "mug"),
        ("please grab a green ball", Task.REFERRING, "green ball"),
        ("where is the cup left of the bottle?", Task.REFERRING, "cup left of the bottle"),
        ("red cup", Task.REFERRING, "red cup"),
        ("segment the biggest box", Task.REFERRING, "biggest box"),
        ("give me something to drink from", Task.REASONING, "give me something to drink from"),
        ("I am thirsty, which one can I use?", Task.REASONING, "I am thirsty, which one can I use"),
    ],
)
def test_commands_map_to_tasks(command: str, task: Task, text: str) -> None:
    request = parse_command(command)
    assert request.task is task and request.text == text


# Words that contain a reasoning marker, an action verb or a demo-syntax key inside them. Routing is by
# whole words, so each stays an object name: "show" holds "how", "chowder" "how", "whatnot" "what",
# "anythingbox" "anything", "shower" "how", "kiwi amulet" "i am", "potato holder" "to hold", "tomato eater"
# "to eat", "whyte" "why", "hungryman" "hungry", "somethingness" "something", "suitabletop" "suitable".
@pytest.mark.parametrize(
    "command, text",
    [
        ("show me the red cup", "red cup"),
        ("grasp the chowder bowl", "chowder bowl"),
        ("get the whatnot", "whatnot"),
        ("grab the anythingbox", "anythingbox"),
        ("grab the shower head", "shower head"),
        ("take the kiwi amulet", "kiwi amulet"),
        ("fetch the potato holder", "potato holder"),
        ("find the tomato eater", "tomato eater"),
        ("grasp the whyte mug", "whyte mug"),
        ("get the hungryman box", "hungryman box"),
        ("locate the somethingness", "somethingness"),
        ("highlight the suitabletop", "suitabletop"),
        ("find the coins: gold and silver", "coins: gold and silver"),
        ("showcase bowl", "showcase bowl"),
    ],
)
def test_markers_inside_words_do_not_route(command: str, text: str) -> None:
    request = parse_command(command)
    assert (request.task, request.text) == (Task.REFERRING, text)


@pytest.mark.parametrize(
    "command",
    [
        "how do I carry soup?",
        "which one can hold soup?",
        "what can I drink from",
        "I'm hungry",
        "i am thirsty",
        "Why is the bowl there, get it",
        "get me anything to eat",
        "bring me the object that is used for cutting",
        "find the thing that holds pens",
        "grab something suitable for flowers",
    ],
)
def test_real_reasoning_markers_still_route_to_reasoning(command: str) -> None:
    request = parse_command(command)
    assert (request.task, request.text) == (Task.REASONING, command.rstrip("?"))


def test_word_helpers() -> None:
    assert words("Show me the RED cup, I'm sure!") == ("show", "me", "the", "red", "cup", "i'm", "sure")
    assert words("I\u2019d like it") == ("i'd", "like", "it")
    assert contains_words(words("grasp the chowder bowl"), "how") is False
    assert contains_words(words("how about the bowl"), "how") is True
    assert contains_words(words("the thing that holds"), "thing that") is True
    assert contains_words(words("the thing, that holds"), "thing that") is True  # punctuation is not a word
    assert contains_words(words("the thingthat holds"), "thing that") is False


@pytest.mark.parametrize(
    "text, continuous",
    [
        ("track the red cup", True),
        ("Follow the mug", True),
        ("keep tracking the bowl", True),
        ("  track\tthe cup", True),
        ("tracker on the table", False),
        ("followup cup", False),
        ("grasp the red cup", False),
        ("keep the cup", False),
    ],
)
def test_tracking_commands_are_recognised_by_whole_words(text: str, continuous: bool) -> None:
    assert is_tracking_command(text) is continuous


def test_demo_syntax_keys_are_whole_words() -> None:
    assert parse_command("ins: cup; sem: table").task is Task.PANOPTIC
    request = parse_command("grasp the coins: gold")
    assert (request.task, request.text) == (Task.REFERRING, "coins: gold")


def test_referring_command_uses_the_official_template_with_the_phrase() -> None:
    request = parse_command("grasp the red cup")
    prompt = chat_prompt(question_for(request.task, request.text))
    assert prompt == "<|user|>\n<image>\nPlease identify and segment the <p>red cup</p> in this image.<|end|>\n<|assistant|>\n"


def test_generic_and_caption_commands() -> None:
    assert parse_command("describe the scene").task is Task.GCG
    request = parse_command("segment everything", default_vocabulary=("cup", "table"), stuff_vocabulary=("table",))
    assert request.task is Task.PANOPTIC and request.vocabulary == ("cup", "table") and request.stuff_vocabulary == ("table",)
    request = parse_command("find all cups and boxes")
    assert request.task is Task.OPEN_VOCABULARY and request.vocabulary == ("cup", "box")
    request = parse_command("ins: cup, bowl; sem: table")
    assert request.task is Task.PANOPTIC and request.vocabulary == ("cup", "bowl", "table")
    assert parse_command("ins: cup").task is Task.INSTANCE
    assert parse_command("sem: table").task is Task.SEMANTIC


@pytest.mark.parametrize("bad", ["", "   ", "grasp the", "please"])
def test_commands_without_an_object_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_command(bad)


def test_segment_everything_needs_a_vocabulary() -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        parse_command("segment everything")


def test_singular() -> None:
    assert [singular(w) for w in ("cups", "boxes", "glasses", "berries", "bowl")] == ["cup", "box", "glass", "berry", "bowl"]


def _instance(x0: int, class_index: int = 0) -> Instance:
    mask = np.zeros((60, 80), bool)
    mask[20:40, x0 : x0 + 20] = True
    return Instance(mask=mask, label="cup", score=0.9, box_xyxy=(x0, 20, x0 + 20, 40), phrase="cup", class_index=class_index)


def test_tracker_keeps_ids_for_moving_objects_and_gives_new_ids_to_new_ones() -> None:
    tracker = InstanceTracker()
    ids = [tracker.update([_instance(2 + 3 * frame)])[0].instance_id for frame in range(15)]
    assert ids == [1] * 15
    both = tracker.update([_instance(47), _instance(2, class_index=1)])
    assert [i.instance_id for i in both] == [1, 2]
    tracker.reset()
    assert tracker.update([_instance(47)])[0].instance_id == 1
