"""The aggregate of several runs: one group per LRMAX with the statistics of its complete runs
(mean ± std, min, max, a 95% t-interval kept within 0-100%, per-seed rows; plain and flip-TTA
accuracy) and the seeds that diverged, its plots, and the aggregate of runs trained apart
(`python -m fastcifar.aggregate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastcifar.engine.schedule import LrBounds
from fastcifar.errors import RunFolderError
from fastcifar.outputs.statistics import aggregate
from fastcifar.records.config_record import ConfigRecord, RunKind, Status, read_config
from fastcifar.records.run_folder import RunFolder
from fastcifar.records.summary import Summary, read_summary
from fastcifar.system.progress import say


def aggregate_groups(summaries: list[Summary], found: LrBounds | None) -> list[dict[str, Any]]:
    """One group per LRMAX: the statistics of its complete runs and the seeds that diverged."""
    groups: dict[Any, list[Summary]] = {}
    for summary in summaries:
        groups.setdefault(summary.config.get("lr_max"), []).append(summary)
    return [_group(lr_max, runs, found) for lr_max, runs in groups.items()]


def say_groups(groups: list[dict[str, Any]]) -> None:
    """A line per LRMAX: the test accuracy over its runs."""
    for group in groups:
        lr = f"LRMAX {group['lr_max']:.4g}: " if group["lr_max"] else ""
        say(f"{lr}test accuracy {group['describe']}")


def run_folders_of(multi: Path) -> list[Path]:
    """The folders of a multi-run's runs (seed-K, or lr-X/seed-K in a sweep), sorted."""
    return sorted(path.parent for path in multi.glob("**/seed-*/summary.json"))


def _group(lr_max: float | None, runs: list[Summary], found: LrBounds | None) -> dict[str, Any]:
    complete = [run for run in runs if run.status == Status.COMPLETE]
    diverged = [run.config["seed"] for run in runs if run.status == Status.DIVERGED]
    plain = aggregate([r.final_test_accuracy for r in complete], 0.0, 1.0) if complete else None
    tta_values = [run.final_test_accuracy_tta for run in complete]
    tta = aggregate(tta_values, 0.0, 1.0) if complete and None not in tta_values else None
    describe = plain.describe() if plain else "no run completed"
    seconds = [run.total_train_seconds for run in complete]
    return {
        "lr_max": lr_max if lr_max is not None else (found.lr_max if found else None),
        "lr_max_found": lr_max is None,
        "accuracy": plain.to_dict() if plain else None,
        "accuracy_tta": tta.to_dict() if tta else None,
        "tta_name": complete[0].headline if tta else None,
        "train_seconds": aggregate(seconds, 0.0).to_dict() if complete else None,
        "wall_seconds": aggregate([r.wall_seconds for r in complete], 0.0).to_dict()
        if complete
        else None,
        "diverged_seeds": diverged,
        "describe": describe
        + (f"; {complete[0].headline} {tta.describe()}" if tta else "")
        + (f"; diverged: seeds {diverged}" if diverged else ""),
        "runs": [
            {
                "seed": run.config["seed"],
                "final_test_accuracy": run.final_test_accuracy,
                "final_test_accuracy_tta": run.final_test_accuracy_tta,
                "total_train_seconds": run.total_train_seconds,
                "wall_seconds": run.wall_seconds,
                "lr_min": run.lr_min,
                "lr_max": run.lr_max,
            }
            for run in complete
        ],
    }


def plot_aggregate(folder: Any, groups: list[dict[str, Any]], found: LrBounds | None) -> None:
    """seed_accuracies.png (flip TTA beside when measured), and lr_sweep.png for a sweep."""
    from fastcifar.outputs import plots  # here: matplotlib costs a run without plots 0.3 s

    measured = [group for group in groups if group["runs"]]
    for group in measured:
        names = [f"seed {run['seed']}" for run in group["runs"]]
        accuracies = [run["final_test_accuracy"] for run in group["runs"]]
        tta = [run["final_test_accuracy_tta"] for run in group["runs"]]
        suffix = f"_lr-{_lr_label(group['lr_max'])}" if len(groups) > 1 else ""
        plots.plot_seed_accuracies(
            names,
            accuracies,
            folder / f"seed_accuracies{suffix}.png",
            tta if None not in tta else None,
            group.get("tta_name", "flip TTA"),
        )
    # Runs that found their own LRMAX (and no range test of the aggregate's) have no LR to plot.
    swept = [group for group in measured if group["lr_max"] is not None]
    if len(groups) > 1 and swept:
        plots.plot_lr_sweep(
            [group["lr_max"] for group in swept],
            [[run["final_test_accuracy"] for run in group["runs"]] for group in swept],
            found.lr_max if found else None,
            folder / "lr_sweep.png",
        )


def _lr_label(lr_max: float | None) -> str:
    return "found" if lr_max is None else f"{lr_max:g}"


# Settings in which the runs of one aggregate may differ: the seed, LRMAX and how it was found,
# and how a run was run rather than what it trained (its device: one process per GPU; its
# outputs; its checkpoints; where its data lay). Any other difference would mix recipes.
VARYING = {"seed", "seeds", "lr_max", "lr_min", "range_test", "data_dir", "range_test_steps",
           "range_test_start_lr", "range_test_end_lr", "device", "plots", "gradcam",
           "tensorboard", "checkpoint_every", "checkpoint_seconds", "eval_batch_size",
           "eval_every", "channels_last"}  # fmt: skip


def aggregate_folders(paths: list[Path], out: str | None, plot: bool = True) -> Summary:
    """The aggregate of runs trained apart (python -m fastcifar.aggregate); see that module."""
    folders = _run_folders(paths)
    summaries = [read_summary(folder) for folder in folders]
    unfinished = [
        f"{f} ({s.status.value})"
        for f, s in zip(folders, summaries, strict=True)
        if s.status not in (Status.COMPLETE, Status.DIVERGED)
    ]
    if unfinished:
        raise RunFolderError(
            f"not finished: {', '.join(unfinished)}: resume them first, or leave them out"
        )
    records = [read_config(folder) for folder in folders]
    # The run the others are compared with: the first that recorded the most of itself, so
    # that an older folder named first does not wave two other networks or data sets through.
    ref = min(range(len(records)), key=lambda i: (records[i].architecture is None,
                                                  records[i].data is None, i))  # fmt: skip
    _refuse_other_recipes(folders, summaries, records, ref)
    _refuse_a_seed_twice(folders, summaries)
    taken = "choose another --out"  # aggregate has no --overwrite, no --resume
    claimed = RunFolder.claim(out, occupied=taken, occupied_complete=taken) if out else None
    groups = aggregate_groups(summaries, None)
    say_groups(groups)
    summary, record = _aggregate_records(folders, summaries, records[ref], groups)
    if claimed is not None:
        claimed.create()
        claimed.write_config(record)
        claimed.write_summary(summary)
        if plot:
            plot_aggregate(claimed, groups, None)
        claimed.release()
        say(f"aggregate: {claimed.path / 'summary.json'}")
    return summary


def _refuse_other_recipes(
    folders: list[Path], summaries: list[Summary], records: list[ConfigRecord], ref: int
) -> None:
    """One line when a run differs from run `ref` in a setting, its network or its data."""
    first, theirs = summaries[ref].config, records[ref]
    for folder, summary, record in zip(folders, summaries, records, strict=True):
        differ = sorted(k for k in first if k not in VARYING and summary.config.get(k) != first[k])
        if record.model != theirs.model:
            differ.append(f"model ({record.model}, not {theirs.model})")
        elif None not in (record.architecture, theirs.architecture) and (
            record.architecture != theirs.architecture
        ):  # one class built with other arguments (a width, a depth)
            differ.append(f"model's parameter shapes (digest {record.architecture}, "
                          f"not {theirs.architecture})")  # fmt: skip
        known = record.data is not None and theirs.data is not None  # 0.1 recorded none
        if known and _data_identity(record) != _data_identity(theirs):
            differ.append("data (" + _data_difference(record, theirs) + ")")
        if differ:
            raise RunFolderError(
                f"{folder} differs from {folders[ref]} in {', '.join(differ)}: "
                "an aggregate takes runs of one recipe"
            )


def _data_identity(record: ConfigRecord) -> dict[str, Any] | None:
    """What the data was, not where it lay: CIFAR-10 in two folders is the same data."""
    return {k: v for k, v in record.data.items() if k != "folder"} if record.data else None


def _data_difference(record: ConfigRecord, first: ConfigRecord) -> str:
    ours, theirs = _data_identity(record) or {}, _data_identity(first) or {}
    keys = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k))
    return "its " + ", ".join("SHA-256" if k == "sha256" else k.replace("_", " ") for k in keys)


def _aggregate_records(
    folders: list[Path], summaries: list[Summary], first: ConfigRecord, groups: list[dict]
) -> tuple[Summary, ConfigRecord]:
    """The aggregate's summary and config.json: diverged when no run completed, as a plan of
    the same runs would be; the seeds named, since they need not follow each other."""
    lr_maxes = [group["lr_max"] for group in groups]
    seeds = sorted({s.config["seed"] for s in summaries})
    config = {
        **first.config,
        "seed": seeds[0],
        "seeds": len(seeds),
        "lr_max": lr_maxes if len(lr_maxes) > 1 else lr_maxes[0],
    }
    completed = any(group["runs"] for group in groups)
    reason = f"aggregated from {len(folders)} run folders (seeds {', '.join(map(str, seeds))})"
    if not completed:
        reason = f"diverged: every run diverged; {reason}"
    status = Status.COMPLETE if completed else Status.DIVERGED
    summary = Summary(RunKind.MULTI, status, config, groups=groups, reason=reason)
    return summary, ConfigRecord(RunKind.MULTI, config, first.data, first.model, first.architecture)


def _refuse_a_seed_twice(folders: list[Path], summaries: list[Summary]) -> None:
    """A seed trained twice at one LRMAX is one draw, not two: counted twice it would narrow the
    spread and the interval."""
    seen: dict[tuple[Any, Any], Path] = {}
    for folder, summary in zip(folders, summaries, strict=True):
        key = (summary.config.get("seed"), summary.config.get("lr_max"))
        if key in seen:
            lr = f" at LRMAX {key[1]:g}" if key[1] is not None else ""
            raise RunFolderError(
                f"{seen[key]} and {folder} are both seed {key[0]}{lr}: one seed is one sample; "
                "leave one of them out"
            )
        seen[key] = folder


def _run_folders(paths: list[Path]) -> list[Path]:
    """The run folders named, a multi-run folder standing for its runs; each once."""
    found: list[Path] = []
    for path in paths:
        summary = read_summary(path)
        if summary.kind == RunKind.MULTI:
            if summary.status not in (Status.COMPLETE, Status.DIVERGED):  # runs not yet made
                raise RunFolderError(
                    f"{path} is a multi-run that is {summary.status.value}: resume it first"
                )
            found += run_folders_of(path)
        elif summary.kind == RunKind.RUN:
            found.append(path)
        else:
            raise RunFolderError(f"{path} holds an LR range test, not a training run")
    resolved = [folder.resolve() for folder in found]
    twice = {str(f) for f in resolved if resolved.count(f) > 1}
    if twice:
        raise RunFolderError(f"named more than once: {', '.join(sorted(twice))}")
    if not found:
        raise RunFolderError("no run folders to aggregate")
    return found
