"""ServerApp: FedAvg over tensorwire payloads, aggregated in Rust by ``tw.aggregate``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

import tensorwire as tw
from tensorwire.integrations.flower import from_array_record, payload_of, to_array_record

from .task import init_model, load_data, loss_and_accuracy

app = ServerApp()


class TensorwireFedAvg(FedAvg):
    """FedAvg whose global model and updates travel as tensorwire payloads.

    Clients send ``tw.encode_update(old, new)`` payloads (differences, compressed, with
    their sample counts); ``aggregate_train`` averages them with ``tw.aggregate``
    against the current global model, skipping (and logging) any update that does not
    fit the round. Traffic per round is logged next to what Flower's default numpy
    ``Array``s of the same tensors would have cost.
    """

    def __init__(self, model: dict[str, np.ndarray], codec: str, out_dir: str) -> None:
        super().__init__(fraction_evaluate=0.0)
        self.model = model
        self.codec = codec
        self.out_dir = Path(out_dir) if out_dir else None
        self.rounds: list[dict[str, float]] = []
        self._down = 0

    def encode_global(self) -> ArrayRecord:
        return to_array_record(self.model, codec=self.codec or None)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["codec"] = self.codec
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._down = arrays.count_bytes() * len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = [m for m in replies if not m.has_error()]
        if not replies:
            return None, None
        records = [m.content["arrays"] for m in replies]
        up = sum(r.count_bytes() for r in records)
        start = time.perf_counter()
        if self.codec:
            payloads = [payload_of(r) for r in records]

            def skipped(i: int, reason: str) -> None:
                log(
                    WARNING,
                    "update from node %s skipped: %s",
                    replies[i].metadata.src_node_id,
                    reason,
                )

            self.model = tw.aggregate(
                payloads, "samples", base=self.model, round=server_round, on_mismatch=skipped
            )
        else:
            weights = [m.content["metrics"]["num-examples"] for m in replies]
            self.model = tw.aggregate([from_array_record(r) for r in records], weights)
        seconds = time.perf_counter() - start
        # What Flower's default serialization (np.save per Array) would have sent.
        default = to_array_record(self.model).count_bytes()
        losses = [m.content["metrics"]["train_loss"] for m in replies]
        row = {
            "round": server_round,
            "clients": len(replies),
            "bytes_down": self._down,
            "bytes_up": up,
            "default_bytes_down": default * len(replies),
            "default_bytes_up": default * len(replies),
            "aggregate_seconds": seconds,
            "train_loss": float(np.mean(losses)),
        }
        self.rounds.append(row)
        log(INFO, "tensorwire round %s: %s", server_round, json.dumps(row))
        self._save()
        return self.encode_global(), MetricRecord({"train_loss": row["train_loss"]})

    def _save(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "traffic.json").write_text(json.dumps(self.rounds, indent=1))
        tw.save(self.model, self.out_dir / "global.twr")


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = TensorwireFedAvg(init_model(), str(cfg["codec"]), str(cfg["out-dir"]))
    x, y = load_data(0, 2)
    log(INFO, "initial loss/accuracy on partition 0: %s", loss_and_accuracy(strategy.model, x, y))
    strategy.start(
        grid=grid,
        initial_arrays=strategy.encode_global(),
        num_rounds=int(cfg["num-server-rounds"]),
    )
    log(INFO, "final loss/accuracy on partition 0: %s", loss_and_accuracy(strategy.model, x, y))
