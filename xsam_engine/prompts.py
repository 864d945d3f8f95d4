"""X-SAM's prompt templates and the Phi-3 chat format.

The official code draws a question and an answer template at random for every call; we fix
the first entry of each list so results are deterministic (spec section 4 / pitfall 10).
The strings are the official ones, listed in full so training and evaluation can draw from
them too.
"""

from __future__ import annotations

from collections.abc import Sequence

from .requests import Task, clean_category

IMAGE_PLACEHOLDER = "<image>"
REGION_PLACEHOLDER = "<region>"
SEG_TOKEN = "<SEG>"
PHRASE_START = "<p>"
PHRASE_END = "</p>"
SPECIAL_TOKENS = (SEG_TOKEN, PHRASE_START, PHRASE_END)

# Phi-3 chat template (xtuner PROMPT_TEMPLATE.phi3_chat).
USER_PREFIX = "<|user|>\n"
INSTRUCTION = "<|user|>\n{input}<|end|>\n<|assistant|>\n"
ANSWER_SUFFIX = "<|end|>"
STOP_WORD = "<|end|>"

REFERRING_QUESTIONS = (
    "Please identify and segment the {phrase} in this image.",
    "Please segment {phrase} in this image.",
    "What is {phrase} in this image? Please output the corresponding segmentation mask.",
    "Can you segment {phrase} in this image? Please generate the segmentation mask.",
    "Could you provide a segmentation mask for the {phrase} in this image? Please provide the segmentation mask.",
    "Where is the {phrase} in this picture? Please output the segmentation masks.",
    "Can you highlight the {phrase} in this image with a segmentation mask? Please output the segmentation mask.",
    "Could you provide a segmentation mask for the {phrase} in this image? Please respond with the segmentation mask.",
    "Where is the {phrase} in this picture? Please output the corresponding segmentation mask.",
)
SEG_ANSWERS = ("<SEG>.", "It is <SEG>.", "Sure, <SEG>.", "Sure, it is <SEG>.", "Sure, the segmentation mask is <SEG>.")
REASONING_QUESTIONS = (
    "{sent} Please output the corresponding segmentation mask.",
    "{sent} Please generate a segmentation mask for this image.",
    "{sent} Please extract the segmentation mask.",
    "{sent} Please return the segmentation predictions as masks.",
    "{sent} Please segment the image.",
)
GENERIC_QUESTIONS = (
    "Can you segment the image based on the following categories: {categories}? Please output the segmentation masks.",
    "Can you generate segmentation masks for this image based on the specified categories: {categories}? Please generate the segmentation masks.",
    "Can you provide segmentation masks for this image based on these categories: {categories}? Please provide the segmentation masks.",
    "Could you create segmentation masks for this image according to the specified categories: {categories}? Please create the segmentation masks.",
    "Could you output segmentation masks for this image that highlight the following categories: {categories}? Please output the segmentation masks.",
    "Could you provide segmentation masks for this image according to the specified categories: {categories}? Please respond with the segmentation masks.",
)
GENERIC_ANSWERS = ("<SEG>.", "It is <SEG>.", "Sure, <SEG>.", "Sure, it is <SEG>.", "Sure, the segmentation result is <SEG>.")
REGION_QUESTIONS = (
    "Can you segment the image based on the following regions: {regions}? Please output the corresponding segmentation mask.",
    "Can you generate segmentation masks for this image based on the specified regions: {regions}? Please generate the segmentation masks.",
    "Can you provide segmentation masks for this image based on these regions: {regions}? Please provide the segmentation masks.",
    "Could you create segmentation masks for this image according to the specified regions: {regions}? Please create the segmentation masks.",
    "Could you output segmentation masks for this image that highlight the following regions: {regions}? Please output the segmentation masks.",
    "Could you provide segmentation masks for this image according to the specified regions: {regions}? Please respond with the segmentation masks.",
)
GCG_QUESTIONS = (
    "Could you please give me a brief description of the image? Please respond with interleaved segmentation masks for the corresponding parts of the answer.",
    "Can you provide a brief description of the this image? Please output interleaved segmentation masks for the corresponding phrases.",
    "Please briefly describe the contents of the image. Please respond with interleaved segmentation masks for the corresponding parts of the answer.",
    "Could you give a brief explanation of what can be found within this picture? Please output interleaved segmentation masks for the corresponding phrases.",
    "Could you give me an brief explanation of this picture? Please respond with interleaved segmentation masks for the corresponding phrases.",
    "Could you provide me with a briefly analysis of this photo? Please output interleaved segmentation masks for the corresponding parts of the answer.",
)
GCG_ANSWER_ENDINGS = ("<SEG>.", "And <SEG>.", "The segmentation mask is <SEG>.", "And the segmentation mask is <SEG>.")


def wrap_phrase(text: str) -> str:
    return f"{PHRASE_START}{text}{PHRASE_END}"


def question_for(
    task: Task,
    text: str = "",
    vocabulary: Sequence[str] = (),
    num_regions: int = 0,
    template_index: int = 0,
) -> str:
    """The user question for a task, with phrases already wrapped in <p>...</p>."""
    if task is Task.REFERRING:
        return REFERRING_QUESTIONS[template_index].format(phrase=wrap_phrase(text.strip().lower()))
    if task is Task.REASONING:
        return REASONING_QUESTIONS[template_index].format(sent=wrap_phrase(text.strip()))
    if task.is_generic:
        categories = ", ".join(wrap_phrase(clean_category(name)) for name in vocabulary)
        return GENERIC_QUESTIONS[template_index].format(categories=categories)
    if task.uses_regions:
        regions = ", ".join(wrap_phrase(REGION_PLACEHOLDER) for _ in range(num_regions))
        return REGION_QUESTIONS[template_index].format(regions=regions)
    if task is Task.GCG:
        return GCG_QUESTIONS[template_index]
    raise ValueError(f"Unknown task {task!r}")


def has_template_answer(task: Task) -> bool:
    """Whether X-SAM's evaluation answers `task` with a fixed template rather than generated text.

    The official evaluation teacher-forces the template answer (`<SEG>.`; spec section 5.3,
    `_forward` with `output_ids_with_output=True`) for every task but GCG, whose answer is a
    generated caption; for those tasks the engine runs one LLM forward with zero decode steps.
    Reasoning is one of them: its evaluation (the paper's ReasonSeg figures) forces `<SEG>.`,
    only the official demo script generates. `SegmentationRequest(generate=True)` generates anyway.
    """
    return task is not Task.GCG


def template_answer(task: Task, template_index: int = 0) -> str:
    """The fixed answer placed after the prompt for tasks that need no free text (`has_template_answer`)."""
    if task in (Task.REFERRING, Task.REASONING):
        return SEG_ANSWERS[template_index]
    if task.is_generic or task.uses_regions:
        return GENERIC_ANSWERS[template_index]
    raise ValueError(f"Task {task.value} has no fixed answer; its answer must be generated")


def chat_prompt(question: str) -> str:
    """The full user turn in Phi-3 chat format, ending where the assistant's answer begins."""
    return INSTRUCTION.format(input=f"{IMAGE_PLACEHOLDER}\n{question}")
