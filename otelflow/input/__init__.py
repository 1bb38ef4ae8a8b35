"""Flow run input: human-in-the-loop runs that wait for input sent from another process or machine.

Prefect 3's ``prefect.input`` API over otelflow's shared store (sqlite by default, Redis across machines;
set ``OTELFLOW_STORE_URL`` the same on both sides). See :mod:`otelflow.input.run_input` for the exact
waiting rules and ``docs/input.md`` for a walkthrough.

Example::

    from otelflow import flow
    from otelflow.input import receive_input, send_input

    @flow
    def approval_workflow(document_id: str):
        approval_input = receive_input(input_type=dict, timeout=3600, key_prefix="approval")
        if approval_input.get("decision") == "approved":
            ...

    # elsewhere: send_input({"decision": "approved"}, flow_run_id, sender="manager@company.com",
    #                       key_prefix="approval")   (or: await send_input(...); or the CLI:
    #   otelflow input send FLOW_RUN_ID --key-prefix approval '{"decision": "approved"}')
"""

from otelflow.input.actions import (
    FlowRunInput,
    FlowRunInputExists,
    InvalidRunInput,
    acreate_flow_run_input,
    adelete_flow_run_input,
    afilter_flow_run_input,
    aread_flow_run_input,
    create_flow_run_input,
    create_flow_run_input_from_model,
    delete_flow_run_input,
    filter_flow_run_input,
    read_flow_run_input,
)
from otelflow.input.run_input import (
    AutomaticRunInput,
    GetInputHandler,
    Keyset,
    RunInput,
    RunInputMetadata,
    asend_input,
    keyset_from_base_key,
    keyset_from_type,
    receive_input,
    run_input_subclass_from_type,
    send_input,
)

__all__ = [
    "AutomaticRunInput",
    "FlowRunInput",
    "FlowRunInputExists",
    "GetInputHandler",
    "InvalidRunInput",
    "Keyset",
    "RunInput",
    "RunInputMetadata",
    "acreate_flow_run_input",
    "adelete_flow_run_input",
    "afilter_flow_run_input",
    "aread_flow_run_input",
    "asend_input",
    "create_flow_run_input",
    "create_flow_run_input_from_model",
    "delete_flow_run_input",
    "filter_flow_run_input",
    "keyset_from_base_key",
    "keyset_from_type",
    "read_flow_run_input",
    "receive_input",
    "run_input_subclass_from_type",
    "send_input",
]
