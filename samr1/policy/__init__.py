"""The policy's side of every path, built once: its processor, its model inputs, its frame, its saved record.

Every place that hands the policy a prompt (the supervised warm start, TRL's GRPO generation and loss, ``samr1
eval``, ``samr1 segment --model``, ``samr1 serve --model``) must give the model the same input keys, the same
padding side and therefore the same (multimodal rope) position ids, or the policy is trained under one position
scheme and sampled under another. :mod:`samr1.policy.inputs` is that one builder; :mod:`samr1.policy.frame`
checks that the answer frame is the frame the model actually sees; :mod:`samr1.policy.record` is the file a
saved policy carries (template, answer frame, generation budget) so that evaluation needs no flags to match
training.
"""

from samr1.policy.adapter import adapter_base, is_adapter, load_policy_model, merge_adapter, processor_folder
from samr1.policy.frame import (
    ANSWER_FRAMES,
    FrameError,
    answer_frame_size,
    check_frame,
    default_answer_frame,
    model_type_of,
    seen_frame,
)
from samr1.policy.inputs import (
           collate,
           encode_prompt,
           encode_prompts,
           load_processor,
           policy_inputs,
           render_prompt,
)
from samr1.policy.record import RECORD_FILE, PolicyRecord, read_record, write_record

__all__ = ["load_processor", "render_prompt", "encode_prompt", "encode_prompts", "collate", "policy_inputs",
           "seen_frame", "check_frame", "FrameError", "ANSWER_FRAMES", "answer_frame_size", "default_answer_frame",
           "model_type_of", "PolicyRecord", "read_record", "write_record", "RECORD_FILE",
           "is_adapter", "adapter_base", "processor_folder", "load_policy_model", "merge_adapter"]
