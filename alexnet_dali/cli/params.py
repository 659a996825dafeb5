"""Parameter types the command modules share: a shard folder (local or `s3://`), the device
choice (the config's)."""

from __future__ import annotations

import click

from alexnet_dali.config.fields import choices
from alexnet_dali.config.schema import TrainConfig

DEVICES = click.Choice(choices(TrainConfig, "device"))


class ShardFolder(click.ParamType):
    """A shard folder that exists here, or an `s3://BUCKET/PREFIX` (checked when it is read)."""

    name = "SHARDS"

    def convert(self, value: str, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        """The value as given; a local folder must exist."""
        from alexnet_dali.tools.storage import is_remote

        if is_remote(value):
            return value
        return click.Path(exists=True, file_okay=False).convert(value, param, ctx)


SHARDS = ShardFolder()


def device_of(name: str) -> str:
    """--device as torch names it: auto -> cuda when available, else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
