"""The Selene-1-Mini and Flow-Judge-v0.1 prompt texts (data only, no logic).

Every string is the official template byte for byte (its source above it); the tests
(``tests/test_families_prompts.py``) read the authors' files in
``shared/reference/judges/`` (the YAML files, ``prompt_formatter.py`` through ``ast``)
and compare. Placeholders are ``{name}`` as in the originals, filled by ``prompts.py``
with one-pass replacement (never ``str.format``: graded text contains braces).

How an item maps onto the placeholders (``prompts.py``):

* Selene: instruction -> ``user_input``, response -> ``assistant_response`` (``_a``/``_b``
  for pairwise), reference answer -> ``reference_response``, rubric criteria ->
  ``rubric_objective``, score N's description -> ``rubric_score_N_description``, a yes/no
  rubric's descriptions -> ``rubric_yes_description`` / ``rubric_no_description``.
* Flow-Judge, as its response-evaluation presets name the variables: ``INPUTS`` =
  ``format_vars([{"query": instruction}, {"reference_answer": reference}])``,
  ``OUTPUT`` = ``format_vars([{"response": response}])``, ``EVALUATION_CRITERIA`` = the
  criteria, ``RUBRIC`` = ``format_rubric`` of the scale's descriptions. No inputs (an
  empty instruction and no reference) selects the no-inputs template, as the library does.
"""
# ruff: noqa: E501

from __future__ import annotations

__all__ = [
    "FLOW_JUDGE_PROMPT",
    "FLOW_JUDGE_PRESET_RUBRICS",
    "FLOW_JUDGE_PROMPT_NO_INPUTS",
    "FLOW_RUBRIC_LINE",
    "FLOW_VARIABLE",
    "SELENE_ABSOLUTE",
    "SELENE_ABSOLUTE_WITH_REFERENCE",
    "SELENE_CLASSIFICATION",
    "SELENE_CLASSIFICATION_WITH_REFERENCE",
    "SELENE_PAIRWISE",
]

# ---------------------------------------------------------------------------
# Selene-1-Mini (Atla; arXiv 2501.17195): one user message, no system prompt
# ---------------------------------------------------------------------------

# atla-ai/selene-mini @1425d20 prompt-templates/absolute-scoring.yaml (user_template).
SELENE_ABSOLUTE = (
    "You are tasked with evaluating a response based on a given instruction (which may contain an Input) and a scoring rubric that serve as the evaluation standard. Provide a comprehensive feedback on the response quality strictly adhering to the scoring rubric, without any general evaluation. Follow this with a score between 1 and 5, referring to the scoring rubric. Avoid generating any additional opening, closing, or explanations.\n"
    "\n"
    "Here are some rules of the evaluation:\n"
    "(1) You should prioritize evaluating whether the response satisfies the provided rubric. The basis of your score should depend exactly on the rubric. However, the response does not need to explicitly address points raised in the rubric. Rather, evaluate the response based on the criteria outlined in the rubric.\n"
    "\n"
    "Your reply should strictly follow this format:\n"
    "**Reasoning:** <Your feedback>\n"
    "\n"
    "**Result:** <an integer between 1 and 5>\n"
    "\n"
    "Here is the data:\n"
    "\n"
    "Instruction:\n"
    "```\n"
    "{user_input}\n"
    "```\n"
    "\n"
    "Response:\n"
    "```\n"
    "{assistant_response}\n"
    "```\n"
    "\n"
    "Score Rubrics:\n"
    "[{rubric_objective}]\n"
    "Score 1: {rubric_score_1_description}\n"
    "Score 2: {rubric_score_2_description}\n"
    "Score 3: {rubric_score_3_description}\n"
    "Score 4: {rubric_score_4_description}\n"
    "Score 5: {rubric_score_5_description}"
)

# atla-ai/selene-mini @1425d20 prompt-templates/absolute-scoring-with-reference.yaml (user_template).
SELENE_ABSOLUTE_WITH_REFERENCE = (
    "You are tasked with evaluating a response based on a given instruction (which may contain an Input) and a scoring rubric and reference answer that serve as the evaluation standard. Provide a comprehensive feedback on the response quality strictly adhering to the scoring rubric, without any general evaluation. Follow this with a score between 1 and 5, referring to the scoring rubric. Avoid generating any additional opening, closing, or explanations.\n"
    "\n"
    "Here are some rules of the evaluation:\n"
    "(1) You should prioritize evaluating whether the response satisfies the provided rubric. The basis of your score should depend exactly on the rubric. However, the response does not need to explicitly address points raised in the rubric. Rather, evaluate the response based on the criteria outlined in the rubric.\n"
    "(2) You should refer to the provided reference answer as a guide for evaluating the response.\n"
    "\n"
    "Your reply should strictly follow this format:\n"
    "**Reasoning:** <Your feedback>\n"
    "\n"
    "**Result:** <an integer between 1 and 5>\n"
    "\n"
    "Here is the data:\n"
    "\n"
    "Instruction:\n"
    "```\n"
    "{user_input}\n"
    "```\n"
    "\n"
    "Response:\n"
    "```\n"
    "{assistant_response}\n"
    "```\n"
    "\n"
    "Score Rubrics:\n"
    "[{rubric_objective}]\n"
    "Score 1: {rubric_score_1_description}\n"
    "Score 2: {rubric_score_2_description}\n"
    "Score 3: {rubric_score_3_description}\n"
    "Score 4: {rubric_score_4_description}\n"
    "Score 5: {rubric_score_5_description}\n"
    "\n"
    "Reference answer:\n"
    "{reference_response}"
)

# atla-ai/selene-mini @1425d20 prompt-templates/classification.yaml (user_template).
SELENE_CLASSIFICATION = (
    "You are tasked with evaluating a response based on a given user input and binary scoring rubric that serves as the evaluation standard. Provide comprehensive feedback on the response quality strictly adhering to the scoring rubric, followed by a binary Yes/No judgment. Avoid generating any additional opening, closing, or explanations.\n"
    "\n"
    "Here are some rules of the evaluation:\n"
    "(1) You should prioritize evaluating whether the response satisfies the provided rubric. The basis of your score should depend exactly on the rubric. However, the response does not need to explicitly address points raised in the rubric. Rather, evaluate the response based on the criteria outlined in the rubric.\n"
    "\n"
    "Your reply must strictly follow this format:\n"
    "**Reasoning:** <Your feedback>\n"
    "\n"
    "**Result:** <Yes or No>\n"
    "\n"
    "Here is the data:\n"
    "\n"
    "Instruction:\n"
    "```\n"
    "{user_input}\n"
    "```\n"
    "\n"
    "Response:\n"
    "```\n"
    "{assistant_response}\n"
    "```\n"
    "\n"
    "Score Rubrics:\n"
    "[{rubric_objective}]\n"
    "Yes: {rubric_yes_description}\n"
    "No: {rubric_no_description}"
)

# atla-ai/selene-mini @1425d20 prompt-templates/classification-with-reference.yaml (user_template).
SELENE_CLASSIFICATION_WITH_REFERENCE = (
    "You are tasked with evaluating a response based on a given user input and binary scoring rubric and reference answer that serve as the evaluation standard.that serves as the evaluation standard. Provide comprehensive feedback on the response quality strictly adhering to the scoring rubric, followed by a binary Yes/No judgment. Avoid generating any additional opening, closing, or explanations.\n"
    "\n"
    "Here are some rules of the evaluation:\n"
    "(1) You should prioritize evaluating whether the response satisfies the provided rubric. The basis of your score should depend exactly on the rubric. However, the response does not need to explicitly address points raised in the rubric. Rather, evaluate the response based on the criteria outlined in the rubric.\n"
    "(2) You should refer to the provided reference answer as a guide for evaluating the response.\n"
    "\n"
    "Your reply must strictly follow this format:\n"
    "**Reasoning:** <Your feedback>\n"
    "\n"
    "**Result:** <Yes or No>\n"
    "\n"
    "Here is the data:\n"
    "\n"
    "Instruction:\n"
    "```\n"
    "{user_input}\n"
    "```\n"
    "\n"
    "Response:\n"
    "```\n"
    "{assistant_response}\n"
    "```\n"
    "\n"
    "Score Rubrics:\n"
    "[{rubric_objective}]\n"
    "Yes: {rubric_yes_description}\n"
    "No: {rubric_no_description}\n"
    "\n"
    "Reference answer:\n"
    "{reference_response}"
)

# atla-ai/selene-mini @1425d20 prompt-templates/pairwise.yaml (user_template).
SELENE_PAIRWISE = (
    "You are a helpful assistant in evaluating the quality of the responses for a given instruction. Your goal is to select the best response for the given instruction.\n"
    "Select Response A or Response B, that is better for the given instruction. The two responses are generated by two different AI chatbots respectively.\n"
    "Do NOT say both / neither are good.\n"
    "\n"
    "Here are some rules of the evaluation:\n"
    "(1) You should prioritize evaluating whether the response satisfies the provided rubric. Then consider its helpfulness, accuracy, level of detail, harmlessness, etc.\n"
    "(2) Responses should NOT contain more/less than what the instruction asks for, as such responses do NOT precisely execute the instruction.\n"
    "(3) You should avoid any potential bias and your judgment should be as objective as possible. Here are some potential sources of bias:\n"
    "- The order in which the responses were presented should NOT affect your judgment, as Response A and Response B are **equally likely** to be the better.\n"
    "- The length of the responses should NOT affect your judgement, as a longer response does not necessarily correspond to a better response. When making your decision, evaluate if the response length is appropriate for the given instruction.\n"
    "\n"
    "Your reply should strictly follow this format:\n"
    "**Reasoning:** <feedback evaluating the responses>\n"
    "\n"
    "**Result:** <A or B>\n"
    "\n"
    "Here is the data.\n"
    "\n"
    "Instruction:\n"
    "```\n"
    "{user_input}\n"
    "```\n"
    "\n"
    "Response A:\n"
    "```\n"
    "{assistant_response_a}\n"
    "```\n"
    "\n"
    "Response B:\n"
    "```\n"
    "{assistant_response_b}\n"
    "```\n"
    "\n"
    "Score Rubrics:\n"
    "[{rubric_objective}]"
)

# ---------------------------------------------------------------------------
# Flow-Judge-v0.1 (Flow AI): one user message, no system prompt
# ---------------------------------------------------------------------------

# flowaicom/flow-judge @9865fc0 flow_judge/utils/prompt_formatter.py (USER_PROMPT_TEMPLATE; the
# library fills it with str.format, we with one-pass replacement).
FLOW_JUDGE_PROMPT = (
    "# GOAL\n"
    "Your job is to evaluate a task carried out by an AI system powered by a large language model.\n"
    "\n"
    "You will be provided with the inputs and output of the task, as well as the evaluation criteria and scoring rubric. Your task is to evaluate the output of the AI system based on the evaluation criteria and scoring rubric provided.\n"
    "\n"
    "# INPUT\n"
    "Below are the inputs required for performing the task:\n"
    "<inputs>\n"
    "{INPUTS}\n"
    "</inputs>\n"
    "\n"
    "# OUTPUT\n"
    "Below is the output of the task:\n"
    "<output>\n"
    "{OUTPUT}\n"
    "</output>\n"
    "\n"
    "# EVALUATION CRITERIA AND SCORING RUBRIC\n"
    "Here are the evaluation criteria and the rubric that you need to use for evaluating the task:\n"
    "<evaluation_criteria>\n"
    "{EVALUATION_CRITERIA}\n"
    "</evaluation_criteria>\n"
    "\n"
    "<scoring_rubric>\n"
    "{RUBRIC}\n"
    "</scoring_rubric>\n"
    "\n"
    "# INSTRUCTIONS FOR THE EVALUATION\n"
    "1. Understand the task and criteria: Familiarize yourself with the task to be evaluated. Review the evaluation criteria and scoring rubric to understand the different levels of performance and the descriptions for each score.\n"
    "2. Review the inputs and output: Look at the inputs provided for the task. Examine the output generated from completing the task.\n"
    "3. Compare output to score descriptions: Compare the output against the criteria and score descriptions in the scoring rubric. For each criterion,decide which description best matches the output.\n"
    "4. After comparing the output to the score descriptions, pay attention to the small details that might impact the final score that you assign. Sometimes a small difference can dictate the final score.\n"
    "5. Write verbal feedback justifying your evaluation that includes a detailed rationale, referring to specific aspects of the output and comparing them to the rubric.\n"
    "6. Assign a final score based on the scoring rubric.\n"
    "\n"
    "## FORMAT FOR THE EVALUATION\n"
    "- Write the verbal feedback inside <feedback> tags without any additional surrounding text.\n"
    "- Write the numeric score inside <score> tags, without any additional surrounding text and always after the feedback.\n"
    "\n"
    "Please accurately evaluate the task. Strictly adhere to the evaluation criteria and rubric."
)

# flowaicom/flow-judge @9865fc0 flow_judge/utils/prompt_formatter.py (USER_PROMPT_NO_INPUTS_TEMPLATE; the
# library fills it with str.format, we with one-pass replacement).
FLOW_JUDGE_PROMPT_NO_INPUTS = (
    "# GOAL\n"
    "Your job is to evaluate a task carried out by an AI system powered by a large language model.\n"
    "\n"
    "You will be provided the output of the task, as well as the evaluation criteria and scoring rubric. Your task is to evaluate the output of the AI system based on the evaluation criteria and scoring rubric provided.\n"
    "\n"
    "# OUTPUT\n"
    "Below is the output of the task:\n"
    "<output>\n"
    "{OUTPUT}\n"
    "</output>\n"
    "\n"
    "# EVALUATION CRITERIA AND SCORING RUBRIC\n"
    "Here are the evaluation criteria and the rubric that you need to use for evaluating the task:\n"
    "<evaluation_criteria>\n"
    "{EVALUATION_CRITERIA}\n"
    "</evaluation_criteria>\n"
    "\n"
    "<scoring_rubric>\n"
    "{RUBRIC}\n"
    "</scoring_rubric>\n"
    "\n"
    "# INSTRUCTIONS FOR THE EVALUATION\n"
    "1. Understand the task and criteria: Familiarize yourself with the task to be evaluated. Review the evaluation criteria and scoring rubric to understand the different levels of performance and the descriptions for each score.\n"
    "2. Review the output: Examine the output generated from completing the task.\n"
    "3. Compare output to score descriptions: Compare the output against the criteria and score descriptions in the scoring rubric. For each criterion,decide which description best matches the output.\n"
    "4. After comparing the output to the score descriptions, pay attention to the small details that might impact the final score that you assign. Sometimes a small difference can dictate the final score.\n"
    "5. Write verbal feedback justifying your evaluation that includes a detailed rationale, referring to specific aspects of the output and comparing them to the rubric.\n"
    "6. Assign a final score based on the scoring rubric.\n"
    "\n"
    "## FORMAT FOR THE EVALUATION\n"
    "- Write the verbal feedback inside <feedback> tags without any additional surrounding text.\n"
    "- Write the numeric score inside <score> tags, without any additional surrounding text and always after the feedback.\n"
    "\n"
    "Please accurately evaluate the task. Strictly adhere to the evaluation criteria and rubric."
)
# flow-judge prompt_formatter.py format_vars: one entry per variable, key lower-cased with
# spaces as "_", entries joined with "\n".
FLOW_VARIABLE = "<{tag}>\n{value}\n</{tag}>"

# flow-judge prompt_formatter.py format_rubric: items sorted by score, joined with "\n".
FLOW_RUBRIC_LINE = "- Score {score}: {description}"

# flowaicom/flow-judge @9865fc0 flow_judge/metrics/presets.py: the response-correctness
# metrics, whose variables are a grade item's (query, reference_answer; output response).
# The faithfulness and relevance presets grade against a "context" input, which a grade
# item does not have, so they are not offered. Named as the library's constants, lower-case.
FLOW_JUDGE_PRESET_RUBRICS: dict[str, dict[str, str]] = {
    "response_correctness_binary": {
        "criteria": "Does the generated response accurately match the provided reference answer for the given query?",
        "score0_description": "The generated response does not match the reference answer. It either contains inaccurate information, is missing key details from the reference, includes extra information not in the reference, or fails to convey the same meaning as the reference answer.",
        "score1_description": "The generated response matches the reference answer exactly or contains all the key information from the reference with no inaccuracies, extra details, or missing details. The meaning conveyed by the generated response is equivalent to the reference.",
        "scale": "0-1",
    },
    "response_correctness_3point": {
        "criteria": "Based on the provided reference response, how well does the system's generated response match the correct answer to the given query?",
        "score1_description": "The generated response does not match the reference response at all. It either fails to address the query or provides a completely incorrect answer.",
        "score2_description": "The generated response partially matches the reference response. It addresses the query but may contain some incorrect, irrelevant or incomplete information compared to the reference.",
        "score3_description": "The generated response fully matches the reference response. It accurately and completely answers the query, containing all the relevant information from the reference without any incorrect or extraneous details.",
        "scale": "1-3",
    },
    "response_correctness_5point": {
        "criteria": "Compare the system's response to the provided reference answer and rate how well they match in accuracy and completeness to answer the query.",
        "score1_description": "The response is completely incorrect or irrelevant to the query, with no overlap in information with the reference answer.",
        "score2_description": "The response contains some correct information relevant to the query but is substantially incomplete or inaccurate compared to the reference answer.",
        "score3_description": "The response answers the query with reasonable accuracy but is missing key details or has minor inaccuracies compared to the reference.",
        "score4_description": "The response accurately answers the query and is nearly complete, only leaving out non-essential details compared to the reference.",
        "score5_description": "The response perfectly matches the accuracy and level of detail of the reference answer, containing all key information to comprehensively answer the query.",
        "scale": "1-5",
    },
}
