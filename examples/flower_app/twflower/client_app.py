"""ClientApp: train on the local partition, send the update as a tensorwire payload."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import tensorwire as tw
from tensorwire.integrations.flower import from_array_record, payload_record, to_array_record

from .task import load_data, train

app = ClientApp()


@app.train()
def train_step(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    parts = int(context.node_config["num-partitions"])
    config = msg.content["config"]
    # The global model arrives as a tensorwire payload (or numpy Arrays): read either.
    old = from_array_record(msg.content["arrays"])
    x, y = load_data(pid, parts)
    new, loss = train(
        old,
        x,
        y,
        int(context.run_config["local-epochs"]),
        float(context.run_config["learning-rate"]),
    )
    codec = str(config["codec"])
    if codec:
        # new - old, compressed, with round / client / sample count in the payload.
        payload = tw.encode_update(
            old,
            new,
            codec=codec,
            round=int(config["server-round"]),
            client_id=f"partition-{pid}",
            num_samples=len(x),
        )
        arrays = payload_record(payload)
    else:
        arrays = to_array_record(new)
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(x)})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)
