"""Many signals, one model: train n tasks of one configuration as a single model whose weights are
stacked ``[n_signals, ...]``.

Each signal keeps its own task (built exactly as a single run builds it: the same seed, so the same
initial weights, and its own batch sampler). `StackedTask` presents the n tasks as one task to the
ordinary `Trainer` loop; `StackedTrainer` is that loop (its schedules, logging boundaries, clock,
progress bar and interruption) with what differs per signal: each signal's records, checkpoints,
divergence and outputs go to its own run directory. Every step the n batches go through the shared
network at once, `torch.func.vmap` over `functional_call` turning each layer
into one batched matrix product; the loss is the sum of the signals' own losses, so each signal's
slice of the gradient is exactly its own, and one Adam step (an element-wise update) over the stacked
tensors is n independent Adam steps. A task takes part through the field-loss protocol
(`FieldLossTask`): what it feeds the field, which of its outputs the loss differentiates by the
inputs (an SDF's eikonal term), and its loss from the outputs; the trainer never asks what kind of
task it trains. A signal fitted this way ends with the weights a single run of
it would have (to float rounding), and its run directory is written in the single-run format:
config.json, metrics.jsonl, checkpoints (with that signal's own optimiser state, so ``--resume`` of
the one run continues it), the outputs and the final metrics.

What cannot be stacked (`unstackable`): models whose buffers differ between signals (NGLOD's octree
follows each shape), components updated from the data during the forward pass (SAPE), the INT
teacher and IGA (they pick per signal), and implementations `vmap` cannot batch (Triton and
tiny-cuda-nn kernels). `nfield.runs.collection` fits those one after another instead.

Example::

    >>> trainer = StackedTrainer(tasks, TrainConfig(steps=300), run_dirs)   # doctest: +SKIP
    >>> metrics = trainer.fit()                                             # one dict per signal
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from nfield.errors import NfieldError
from nfield.run_directory import RunDirectory, append_metrics, truncate_metrics
from nfield.training.checkpoint import load_model_weights, load_trainer_state, save_checkpoint
from nfield.training.trainer import TrainConfig, Trainer


class FieldLossTask(Protocol):
    """What a task offers to be trained stacked: its loss as a function of its field's outputs.

    Attributes:
        field_method: the model's method a batch goes through ("forward", or an SDF's
            "forward_all_lods").
        coordinate_dim: the field's input dimension (2 for images, 3 for shapes).
        needs_input_gradient: whether the loss needs the gradient of `gradient_source` by the inputs.
    """

    field_method: str
    coordinate_dim: int
    needs_input_gradient: bool

    def field_inputs(self, batch: Any) -> torch.Tensor:
        """The (B, coordinate_dim) points of `batch` the field is evaluated at."""

    def gradient_source(self, outputs: torch.Tensor) -> torch.Tensor:
        """The (B,) values of `outputs` whose gradient by the inputs the loss needs (asked only of
        tasks that set `needs_input_gradient`)."""

    def field_loss(
        self, batch: Any, outputs: torch.Tensor, gradient: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss, its metrics) of the field's `outputs` (float32) at the batch's inputs, with the
        inputs' gradient of `gradient_source` (B, coordinate_dim) when `needs_input_gradient`."""


class _Method(nn.Module):
    """Calls `module.<name>` as its forward, so `functional_call` reaches methods besides forward."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.name)(x)


def unstackable(tasks: Sequence[Any]) -> str | None:
    """Why `tasks` cannot train as one stacked model (None when they can): a reason for the user."""
    first = tasks[0]
    if not callable(getattr(first, "field_loss", None)):
        return f"{first.name} runs are fitted one at a time"
    if getattr(first, "teacher", None) is not None or getattr(first, "adjuster", None) is not None:
        return "INT and IGA choose each signal's samples from its own errors"
    if any(callable(getattr(m, "observe_error", None)) for m in first.model.modules()):
        return "the model's encoding is updated from each signal's errors (SAPE)"
    buffers = [dict(task.model.named_buffers()) for task in tasks]
    for name, value in buffers[0].items():
        if any(other[name].shape != value.shape or not torch.equal(other[name], value) for other in buffers[1:]):
            return f"the model's '{name}' differs between signals (it is built from each signal)"
    return None


class StackedTask:
    """n tasks of one configuration as one task of the `Trainer`: their weights stacked [n, ...].

    The loss is the sum of the active signals' own losses (each signal's slice of the gradient is
    its own); its metrics are each signal's, as (n,) tensors, with the losses as ``signal_loss``.
    ``model`` holds the n tasks' own models (their progress-aware modules are updated as each single
    run's would be); the stacked weights, which the optimiser trains, are `params`.
    """

    def __init__(self, tasks: Sequence[FieldLossTask]):
        self.tasks = list(tasks)
        self.n = len(self.tasks)
        first = self.tasks[0]
        self.name = f"{first.name} x{self.n}"
        self.template = first.model
        self.model = nn.ModuleList([task.model for task in self.tasks])
        self.names = [name for name, _ in self.template.named_parameters()]
        self.params = {name: self._stacked(name).requires_grad_() for name in self.names}
        self.active = [True] * self.n  # False once a signal's loss stops being finite
        self._wrapped = _Method(self.template, first.field_method)
        self._forward = vmap(self._call_one, in_dims=(0, 0))

    def _stacked(self, name: str) -> torch.Tensor:
        return torch.stack([dict(task.model.named_parameters())[name].detach() for task in self.tasks])

    def _call_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """One signal's field at `x` (B, d) with its weights `params` (the template's buffers)."""
        state = {f"module.{name}": value for name, value in params.items()}
        state.update({f"module.{name}": value for name, value in self.template.named_buffers()})
        return functional_call(self._wrapped, state, (x,))

    def param_groups(self) -> list[dict[str, Any]]:
        """The first task's parameter groups (and their own keys) over the stacked weights."""
        names_of = {id(p): name for name, p in self.template.named_parameters()}
        return [
            dict(group, params=[self.params[names_of[id(p)]] for p in group["params"]]) for group in self.tasks[0].param_groups()
        ]

    def update(self, step: int, total: int) -> None:
        for task in self.tasks:
            if callable(getattr(task, "update", None)):
                task.update(step, total)

    def sample(self, step: int) -> list[Any]:
        return [task.sample(step) for task in self.tasks]

    def loss(self, batches: list[Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = torch.stack([task.field_inputs(batch) for task, batch in zip(self.tasks, batches)])  # (n, B, d)
        gradients: list[torch.Tensor | None] = [None] * self.n
        needs_gradient = self.tasks[0].needs_input_gradient
        x = x.detach().requires_grad_(needs_gradient)
        outputs = self._forward(self.params, x).float()  # (n, B, ...)
        if needs_gradient:  # d source / d x of each signal: its own slice, the signals being independent
            sources = torch.stack([task.gradient_source(outputs[i]) for i, task in enumerate(self.tasks)])
            (stacked,) = torch.autograd.grad(sources.sum(), x, create_graph=True)
            gradients = list(stacked)
        terms = [task.field_loss(batches[i], outputs[i], gradients[i]) for i, task in enumerate(self.tasks)]
        losses = torch.stack([loss for loss, _ in terms])
        kept = torch.tensor(self.active, device=losses.device)
        metrics = {name: torch.stack([m[name].detach().float() for _, m in terms]) for name in terms[0][1]}
        metrics["signal_loss"] = losses.detach()
        return torch.where(kept, losses, torch.zeros_like(losses)).sum(), metrics

    @torch.no_grad()
    def unstack(self, i: int) -> None:
        """Copy signal i's weights into its task's own model (to evaluate, export or save it)."""
        for name, p in self.tasks[i].model.named_parameters():
            p.copy_(self.params[name][i])

    @torch.no_grad()
    def restack(self) -> None:
        """Copy every task's own weights into the stacked ones (after loading checkpoints)."""
        for name, value in self.params.items():
            value.copy_(self._stacked(name).to(value.device))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class StackedTrainer(Trainer):
    """Trains `tasks` (one configuration, each with its own data) as one stacked model, each signal
    into its own run directory in the single-run format.

    Args:
        tasks: n tasks of identical field and settings that offer the field-loss protocol
            (`FieldLossTask`), on one device, each built after ``seed_everything(cfg.seed)`` (so each
            starts where its single run would).
        cfg: the training settings they share.
        run_dirs: one run directory per task (config.json already written there).
        device: where the tasks live.
        resume: continue each task from the newest checkpoint in its run directory (all at one step).
    """

    def __init__(
        self,
        tasks: Sequence[FieldLossTask],
        cfg: TrainConfig,
        run_dirs: Sequence[Path],
        device: torch.device | str = "cpu",
        resume: bool = False,
    ):
        reason = unstackable(tasks)
        if reason is not None:
            raise NfieldError(f"these signals cannot be fitted as one stacked model: {reason}")
        self.run_dirs = [RunDirectory(d) for d in run_dirs]
        super().__init__(StackedTask(tasks), cfg, self.run_dirs[0].path, device)
        self.stacked: StackedTask = self.task  # type: ignore[assignment]
        self.failures: dict[int, str] = {}
        self.evaluated: list[dict[str, float]] = [{} for _ in run_dirs]
        if resume:
            self.resume()

    def runs(self) -> list[tuple[Path, Any]]:
        """(run directory, task) of every signal."""
        return [(directory.path, task) for directory, task in zip(self.run_dirs, self.stacked.tasks)]

    @property
    def saved_where(self) -> str:
        return "checkpoints saved in each run directory"

    def _active(self) -> list[int]:
        return [i for i in range(self.stacked.n) if self.stacked.active[i]]

    def probe(self) -> None:
        """One forward and backward pass of every signal on two of its points, without updating anything
        (`NfieldError` with the reason when the model's implementation cannot be batched)."""
        stacked = self.stacked
        try:
            dim = stacked.tasks[0].coordinate_dim
            x = torch.zeros(stacked.n, 2, dim, device=self.device).requires_grad_()
            out = stacked._forward(stacked.params, x)
            torch.autograd.grad(out.float().sum(), list(stacked.params.values()), allow_unused=True)
        except Exception as err:  # vmap refuses kernels it has no batching rule for
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise NfieldError(f"the model's implementation cannot be batched with vmap ({first[:160]})") from None

    # --- per signal: records, divergence, evaluation, outputs ---------------------------------------
    def _log(self, record: dict[str, Any], bar: tqdm | None) -> None:
        """A record of every signal (the backends that ran) into each active signal's metrics.jsonl."""
        for i in self._active():
            append_metrics(self.run_dirs[i].metrics, record)

    def _flush(self, window: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]], bar: tqdm) -> None:
        """Read the window's losses once; a signal whose loss stopped being finite leaves the batch
        (its weights are zeroed so it cannot disturb the others); log the means per signal."""
        lr = self.optimizer.param_groups[0]["lr"]
        losses = torch.stack([m["signal_loss"].float() for _, _, m in window]).cpu()  # (steps, n)
        names = [name for name in window[0][2] if name != "signal_loss"]
        shown = []
        for i in self._active():
            finite = torch.isfinite(losses[:, i])
            if not bool(finite.all()):
                bad = window[int((~finite).nonzero()[0, 0])][0]
                self.failures[i] = f"loss became {losses[~finite, i][0].item()} at step {bad + 1}; lower --lr"
                self.stacked.active[i] = False
                with torch.no_grad():
                    for value in self.stacked.params.values():
                        value[i].zero_()
                print(f"nfield: warning: {self.run_dirs[i]}: {self.failures[i]}; the other signals go on", file=sys.stderr)
                continue
            record: dict[str, Any] = {"step": self.step, "kind": "train", "loss": float(losses[:, i].mean())}
            for name in names:
                record[f"train_{name}"] = float(torch.stack([m[name][i] for _, _, m in window]).float().mean())
            record["lr"] = lr
            record["train_seconds"] = round(self.train_seconds, 4)
            append_metrics(self.run_dirs[i].metrics, record)
            shown.append(record)
        bar.update(self.step - bar.n)
        if shown:
            keys = [k for k in shown[0] if k == "loss" or (k.startswith("train_") and k != "train_seconds")]
            bar.set_postfix({k.removeprefix("train_"): f"{sum(r[k] for r in shown) / len(shown):.4g}" for k in keys})

    def _clip_gradients(self, max_norm: float) -> None:
        """Scale each signal's gradient to a global norm of at most `max_norm` (as its own run would)."""
        grads = [p.grad for p in self.stacked.params.values() if p.grad is not None]
        if not grads:
            return
        n = self.stacked.n
        squares = torch.stack([g.float().pow(2).reshape(n, -1).sum(1) for g in grads]).sum(0)  # (n,)
        factor = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))

    def _evaluate(self, progress: bool, leave: bool, bar: tqdm) -> dict[str, float]:
        """Evaluate each active signal with its own weights and log it in its own run."""
        for i in self._active():
            self.stacked.unstack(i)
            self.evaluated[i] = self.stacked.tasks[i].evaluate()
            append_metrics(self.run_dirs[i].metrics, {"step": self.step, "kind": "eval", **self.evaluated[i]})
        return {}

    def _close(self, shown: bool, bar: tqdm) -> list[dict[str, Any] | None]:
        """Each signal's closing evaluation and outputs; one result per signal: the final metrics with
        the step, the training time and the run directory (None for a signal whose loss diverged, see
        `failures`)."""
        self._evaluate(False, True, bar)
        results: list[dict[str, Any] | None] = []
        for i, task in enumerate(self.stacked.tasks):
            if not self.stacked.active[i]:
                results.append(None)
                continue
            self.stacked.unstack(i)
            task.write_outputs(self.run_dirs[i].path)
            report = self.run_dirs[i].recorded_eval()
            seconds = round(self.train_seconds, 3)
            results.append(
                {"step": self.step, **self.evaluated[i], **report, "train_seconds": seconds, "run_dir": str(self.run_dirs[i])}
            )
        self._run_ended()
        return results

    # --- per signal: checkpoints --------------------------------------------------------------------
    def _signal_optimizer(self, i: int) -> torch.optim.Adam:
        """An Adam over signal i's own model holding its slice of the stacked optimiser state: what a
        single run of it would hold at this step."""
        cfg, task = self.cfg, self.stacked.tasks[i]
        optimizer = torch.optim.Adam(task.param_groups(), betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        for group, stacked_group in zip(optimizer.param_groups, self.optimizer.param_groups):
            group["lr"] = stacked_group["lr"]
        own = dict(task.model.named_parameters())
        for name, stacked in self.stacked.params.items():
            state = self.optimizer.state.get(stacked)
            if state:
                optimizer.state[own[name]] = {
                    key: value.clone() if key == "step" else value[i].clone() for key, value in state.items()
                }
        return optimizer

    def save(self) -> None:
        """A checkpoint in every active signal's run directory, in the single-run format."""
        self._saved_at = self.train_seconds
        for i in self._active():
            self.stacked.unstack(i)
            task = self.stacked.tasks[i]
            state = {
                "step": self.step,
                "train_seconds": self.train_seconds,
                "optimizer": self._signal_optimizer(i).state_dict(),
                "scaler": self.scaler.state_dict(),
                "task": task.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            }
            save_checkpoint(self.run_dirs[i].path, self.step, task.model, state, keep=self.cfg.keep_checkpoints)

    def resume(self) -> int:
        """Each signal's newest checkpoint into its model, sampler and slice of the stacked optimiser
        state; every signal must be at one step."""
        states = []
        for task, run_dir in zip(self.stacked.tasks, self.run_dirs):
            checkpoint = run_dir.latest_checkpoint()
            if checkpoint is None:
                raise NfieldError(f"{run_dir}: no checkpoint to resume from")
            load_model_weights(task.model, checkpoint)
            state = load_trainer_state(checkpoint)
            task.load_state_dict(state["task"])
            states.append(state)
        steps = {int(state["step"]) for state in states}
        if len(steps) != 1:
            raise NfieldError(f"signals at different steps ({sorted(steps)}) cannot resume as one stacked model")
        self.step = steps.pop()
        self.resumed = True
        self.train_seconds = self._saved_at = float(states[0].get("train_seconds", 0.0))
        torch.set_rng_state(states[0]["rng_cpu"])
        for run_dir in self.run_dirs:
            truncate_metrics(run_dir.metrics, self.step)
        self.stacked.restack()
        self._stack_optimizer_states(states)
        return self.step

    def _stack_optimizer_states(self, states: list[dict[str, Any]]) -> None:
        """The stacked Adam state from each signal's saved one (see `_signal_optimizer`)."""
        cfg, per_signal = self.cfg, []
        for task, state in zip(self.stacked.tasks, states):
            optimizer = torch.optim.Adam(task.param_groups(), betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (KeyError, ValueError, RuntimeError) as err:
                raise NfieldError(f"a checkpoint's optimiser state does not match this run ({err})") from None
            own = dict(task.model.named_parameters())
            per_signal.append({name: optimizer.state.get(own[name], {}) for name in self.stacked.names})
        for name, stacked in self.stacked.params.items():
            signal_states = [signal[name] for signal in per_signal]
            if signal_states[0]:
                self.optimizer.state[stacked] = {
                    key: signal_states[0][key].clone()
                    if key == "step"
                    else torch.stack([s[key] for s in signal_states]).to(self.device)
                    for key in signal_states[0]
                }
