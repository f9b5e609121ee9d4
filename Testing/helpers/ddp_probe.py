"""Run by the distributed tests under torchrun: pretrain, then save this rank's weights for comparison.

Usage: torchrun --nproc_per_node=N Testing/helpers/ddp_probe.py CONFIG_JSON DUMP_DIR
"""
import json
import sys
from pathlib import Path

import torch

from pgl_engine.config import PretrainConfig
from pgl_engine.training.distributed import end_process
from pgl_engine.pretraining.trainer import Pretrainer


class ProbedPretrainer(Pretrainer):
    def train(self):
        out = super().train()
        dump = Path(sys.argv[2])
        dump.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), dump / f"rank{self.world.rank}.pt")
        return out


if __name__ == "__main__":
    config = PretrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    ProbedPretrainer(config).run()
    end_process(0)
