"""Prompt templates: how a task row (a Countdown puzzle or a math question) becomes TRL chat messages.

A template is chosen by name and renders a conversational prompt, ``[{"role": "system", ...}, {"role": "user",
...}]``, that TRL's ``GRPOTrainer`` passes through the tokenizer's chat template.

========  =====================================================================  ==============================
name      what the model is asked to write                                        checked by reward ``format``
========  =====================================================================  ==============================
``r1``    R1-Zero style: reasoning in ``<think> </think>``, then the final        ``format_r1``
          answer in ``<answer> </answer>``. Countdown uses TinyZero's wording,
          system prompt and assistant prefill ("Let me solve this step by
          step.\n<think>") verbatim (the paper's Countdown runs follow
          TinyZero); math asks for the answer in the same tags. Default for
          ``countdown``.
``boxed`` ``\\boxed{}`` style ("Please reason step by step, and put your final   ``format_boxed``
          answer within \\boxed{}.", the Qwen2.5-Math / DeepSeek-R1 eval
          prompt). No system message. Default for math datasets.
========  =====================================================================  ==============================

A template with a prefill ends the prompt with that assistant message, which generation continues
(``continue_final_message``) instead of opening a new assistant turn: ``AnchorGRPOTrainer`` tokenizes such prompts
with ``prefill_prompt_ids`` (TRL 1.16 itself would close the prefill). The completion therefore starts inside
``<think>``. :func:`render_prompt_ids` is the one way prompts become token ids outside the trainer (evaluation and
analysis call it): TRL's tokenization for prompts without a prefill, ``prefill_prompt_ids`` for those with one, so
every part of the library feeds the model the ids training generated from.

The paper does not give its RL prompts; these are the readings of TinyZero (Countdown) and of the common math-RL
recipes. Both rewards ``math_accuracy`` and ``countdown`` read either style (an ``<answer>``
tag first, else the last ``\\boxed{}``), so a template change never silently zeroes the accuracy reward.

Example::

    >>> get_template("r1").render("countdown", numbers=[3, 5, 7], target=16)[-1]["content"][:40]
    'Using the numbers [3, 5, 7], create an eq'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attncredit.errors import ConfigError

TASKS = ("countdown", "math")

# TinyZero's instruct-model system prompt, verbatim (grammar included) so prompts match the reference runs.
TINYZERO_SYSTEM = (
    "You are a helpful assistant. You first thinks about the reasoning process in the mind "
    "and then provides the user with the answer."
)

_COUNTDOWN_R1 = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)
_MATH_R1 = (
    "{question}\n\nShow your work in <think> </think> tags. And return the final answer in <answer> </answer> "
    "tags, for example <answer> 42 </answer>."
)
_COUNTDOWN_BOXED = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number must be used exactly once. Please reason step by step, and put "
    "your final equation within \\boxed{{}}, for example \\boxed{{(1 + 2) / 3}}."
)
_MATH_BOXED = "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
# TinyZero's assistant prefill: the model continues from inside the <think> block.
TINYZERO_PREFILL = "Let me solve this step by step.\n<think>"


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt style: a system message (or none) and one user-message format string per task.

    ``style`` names the answer format the template asks for (``"r1"`` or ``"boxed"``); the ``format`` reward
    checks that style. User strings are ``str.format`` templates over the row's fields: ``{question}`` for
    math, ``{numbers}`` and ``{target}`` for Countdown.
    """

    name: str
    style: str
    user: dict[str, str]
    system: dict[str, str] = field(default_factory=dict)
    prefill: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def render(self, task: str, **fields) -> list[dict[str, str]]:
        """Chat messages for one row of ``task`` (``"countdown"`` or ``"math"``)."""
        if task not in self.user:
            raise ConfigError(
                f"template '{self.name}' has no form for task '{task}'; it supports: {', '.join(self.user)}"
            )
        messages = []
        if self.system.get(task):
            messages.append({"role": "system", "content": self.system[task]})
        messages.append({"role": "user", "content": self.user[task].format(**fields)})
        if self.prefill.get(task):
            messages.append({"role": "assistant", "content": self.prefill[task]})
        return messages


TEMPLATES: dict[str, PromptTemplate] = {
    "r1": PromptTemplate(
        name="r1",
        style="r1",
        user={"countdown": _COUNTDOWN_R1, "math": _MATH_R1},
        system={"countdown": TINYZERO_SYSTEM, "math": TINYZERO_SYSTEM},
        prefill={"countdown": TINYZERO_PREFILL, "math": TINYZERO_PREFILL},
        description="R1-Zero: <think> reasoning </think> <answer> final answer </answer> (TinyZero's Countdown wording)",
    ),
    "boxed": PromptTemplate(
        name="boxed",
        style="boxed",
        user={"countdown": _COUNTDOWN_BOXED, "math": _MATH_BOXED},
        description="step-by-step reasoning, final answer in \\boxed{}",
    ),
}

DEFAULT_TEMPLATE = {"countdown": "r1", "math": "boxed"}


def list_templates() -> list[str]:
    """Names accepted by ``get_template`` and by ``load_dataset_by_name(..., template=...)``."""
    return sorted(TEMPLATES)


def get_template(template: str | PromptTemplate | None, task: str = "math") -> PromptTemplate:
    """The template called ``template``; ``None`` gives the task's default (countdown: ``r1``, math: ``boxed``)."""
    if isinstance(template, PromptTemplate):
        return template
    if template is None:
        if task not in DEFAULT_TEMPLATE:
            raise ConfigError(f"unknown task '{task}'; allowed: {', '.join(TASKS)}")
        template = DEFAULT_TEMPLATE[task]
    if template not in TEMPLATES:
        raise ConfigError(f"unknown prompt template '{template}'; allowed: {', '.join(list_templates())}")
    return TEMPLATES[template]


def chat_prompt_text(tokenizer, messages: list[dict[str, str]], **template_kwargs) -> str:
    """The prompt text generation starts from: the chat template with a generation prompt, or, when the last
    message is an assistant prefill, that message left open (``continue_final_message``)."""
    prefilled = messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=not prefilled, continue_final_message=prefilled, **template_kwargs
    )


def has_prefill(prompts) -> bool:
    """Whether any conversational prompt ends with an assistant prefill."""
    return any(isinstance(p, list) and p and p[-1].get("role") == "assistant" for p in prompts)


def prefill_prompt_ids(tokenizer, prompts, **template_kwargs) -> list[list[int]]:
    """Token ids of conversational prompts, each rendered by :func:`chat_prompt_text` (a prefill stays open).

    TRL 1.16's GRPOTrainer always adds a generation prompt, which would close a prefill and open a new assistant
    turn; ``AnchorGRPOTrainer`` and the evaluation use this instead when a prompt has a prefill. The template
    already holds its special tokens, so none are added again.
    """
    texts = [chat_prompt_text(tokenizer, p, **template_kwargs) for p in prompts]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def render_prompt_ids(tokenizer, prompts, **template_kwargs) -> list[list[int]]:
    """Token ids of each prompt, exactly as ``AnchorGRPOTrainer._tokenize_prompts`` makes them for generation.

    * plain-text prompts: ``tokenizer(prompts)`` (special tokens added), as TRL tokenizes them;
    * conversational prompts without a prefill: TRL's ``apply_chat_template(add_generation_prompt=True,
      tokenize=True)``;
    * conversational prompts of which one ends with an assistant prefill: :func:`prefill_prompt_ids`, which leaves
      the prefill open, as the trainer does.

    ``template_kwargs`` (e.g. ``tools``, ``chat_template``) go to the chat template. Conversational prompts need a
    tokenizer with a chat template, as in training.
    """
    prompts = list(prompts)
    if not prompts:
        return []
    if isinstance(prompts[0], str):
        return [list(ids) for ids in tokenizer(prompts)["input_ids"]]
    if not (getattr(tokenizer, "chat_template", None) or template_kwargs.get("chat_template")):
        raise ConfigError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template, so it cannot render "
            "conversational prompts (TRL's trainer could not either); use a model with a chat template or "
            "plain-text prompts"
        )
    if has_prefill(prompts):
        return prefill_prompt_ids(tokenizer, prompts, **template_kwargs)
    out = tokenizer.apply_chat_template(
        conversation=prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **template_kwargs
    )["input_ids"]
    return [list(ids) for ids in out]
