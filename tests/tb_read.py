"""Read TensorBoard event files back (test helper)."""
from pathlib import Path


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def has_hparams(run_dir: str | Path) -> bool:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return "hparams" in acc.PluginTagToContent("hparams") or bool(acc.PluginTagToContent("hparams"))


def read_hparams(run_dir: str | Path) -> tuple[list[str], dict]:
    """(the hyperparameter columns the run's HParams experiment declares, the run's own hparam values)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    ssi = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: (v.number_value if v.HasField("number_value") else v.string_value if v.HasField("string_value")
                  else v.bool_value) for k, v in ssi.hparams.items()}
    return [h.name for h in exp.hparam_infos], values


def read_text(run_dir: str | Path, tag: str) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    ev = acc.Tensors(tag if tag in acc.Tags()["tensors"] else f"{tag}/text_summary")[-1]
    return b"".join(ev.tensor_proto.string_val).decode()
