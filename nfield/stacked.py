"""Many signals, one model: train n tasks of one configuration as a single model whose weights are
stacked ``[n_signals, ...]``.

Each signal keeps its own task (an `ImageTask` or `SDFTask` built exactly as a single run builds it:
the same seed, so the same initial weights, and its own batch sampler). Every step the n batches
go through the shared network at once, `torch.func.vmap` over `functional_call` turning each layer
into one batched matrix product; the loss is the sum of the signals' own losses, so each signal's
slice of the gradient is exactly its own, and one Adam step (an element-wise update) over the stacked
tensors is n independent Adam steps. A signal fitted this way ends with the weights a single run of
it would have (to float rounding), and its run directory is written in the single-run format:
config.json, metrics.jsonl, checkpoints (with that signal's own optimiser state, so ``--resume`` of
the one run continues it), the outputs and the final metrics.

What cannot be stacked (`unstackable`): models whose buffers differ between signals (NGLOD's octree
follows each shape), components updated from the data during the forward pass (SAPE), the INT
teacher and IGA (they pick per signal), and implementations `vmap` cannot batch (Triton and
tiny-cuda-nn kernels). `nfield.many` fits those one after another instead.

Example::

    >>> trainer = StackedTrainer(tasks, TrainConfig(steps=300), run_dirs)   # doctest: +SKIP
    >>> metrics = trainer.fit()                                             # one dict per signal
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from time import perf_counter
from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from nfield.backends import backends_in_use, reset_backends
from nfield.checkpoint import latest_checkpoint, load_model_weights, load_trainer_state, save_checkpoint
from nfield.errors import Interrupted, NfieldError
from nfield.progress import progress_bar
from nfield.tasks.image import ImageTask
from nfield.tasks.sdf import SDFTask, sdf_gradient
from nfield.train import (
    TrainConfig,
    learning_rate_factor,
    progress_aware_modules,
    seed_everything,
    truncate_metrics,
    write_curves_quietly,
)


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
    if not isinstance(first, (ImageTask, SDFTask)):
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


class StackedTrainer:
    """Trains `tasks` (one configuration, each with its own data) as one stacked model.

    Args:
        tasks: n `ImageTask`s or n `SDFTask`s of identical field and settings, on one device, each
            built after ``seed_everything(cfg.seed)`` (so each starts where its single run would).
        cfg: the training settings they share.
        run_dirs: one run directory per task (config.json already written there).
        device: where the tasks live.
        resume: continue each task from the newest checkpoint in its run directory (all at one step).
    """

    def __init__(
        self,
        tasks: Sequence[ImageTask | SDFTask],
        cfg: TrainConfig,
        run_dirs: Sequence[Path],
        device: torch.device | str = "cpu",
        resume: bool = False,
    ):
        cfg.validate()
        reason = unstackable(tasks)
        if reason is not None:
            raise NfieldError(f"these signals cannot be fitted as one stacked model: {reason}")
        self.tasks, self.cfg, self.run_dirs = list(tasks), cfg, [Path(d) for d in run_dirs]
        self.device = torch.device(device)
        self.n = len(self.tasks)
        self.template = self.tasks[0].model
        self.is_sdf = isinstance(self.tasks[0], SDFTask)
        self.names = [name for name, _ in self.template.named_parameters()]
        self.step, self.train_seconds = 0, 0.0
        self._saved_at = 0.0  # train_seconds at the last checkpoint
        self.active = [True] * self.n  # False once a signal's loss stops being finite
        self.failures: dict[int, str] = {}
        self.use_amp = cfg.mixed_precision and self.device.type == "cuda"
        if resume:
            self._load_checkpoints()
        self.params = {
            name: torch.stack([dict(t.model.named_parameters())[name].detach() for t in self.tasks]).requires_grad_()
            for name in self.names
        }
        self.optimizer = self._stacked_optimizer()
        if resume:
            self._stack_optimizer_states()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.scheduled = [progress_aware_modules(t.model) for t in self.tasks]
        method = "forward_all_lods" if self.is_sdf else "forward"
        self._wrapped = _Method(self.template, method)
        self._forward = vmap(self._call_one, in_dims=(0, 0))

    # --- the stacked model --------------------------------------------------------------------------
    def _call_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """One signal's field at `x` (B, d) with its weights `params` (the template's buffers)."""
        state = {f"module.{name}": value for name, value in params.items()}
        state.update({f"module.{name}": value for name, value in self.template.named_buffers()})
        return functional_call(self._wrapped, state, (x,))

    def _stacked_optimizer(self) -> torch.optim.Adam:
        """Adam over the stacked weights, with the parameter groups (and their own keys) of the tasks'."""
        names_of = {id(p): name for name, p in self.template.named_parameters()}
        groups = []
        for group in self.tasks[0].param_groups():
            stacked = dict(group, params=[self.params[names_of[id(p)]] for p in group["params"]], lr=self.cfg.lr)
            groups.append(stacked)
        cfg = self.cfg
        return torch.optim.Adam(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)

    def probe(self) -> None:
        """One forward and backward pass of every signal on two of its points, without updating anything
        (`NfieldError` with the reason when the model's implementation cannot be batched)."""
        try:
            x = torch.zeros(self.n, 2, 3 if self.is_sdf else 2, device=self.device).requires_grad_(self.is_sdf)
            out = self._forward(self.params, x)
            torch.autograd.grad(out.float().sum(), list(self.params.values()), allow_unused=True)
        except Exception as err:  # vmap refuses kernels it has no batching rule for
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise NfieldError(f"the model's implementation cannot be batched with vmap ({first[:160]})") from None

    # --- training -----------------------------------------------------------------------------------
    def fit(self, progress_label: str = "") -> list[dict[str, Any] | None]:
        """Train every signal to ``cfg.steps``; returns one result per signal: the final metrics with
        the step, the training time and the run directory (None for a signal whose loss diverged, see
        `failures`). Each run directory receives its checkpoints, metrics.jsonl and outputs."""
        cfg, total = self.cfg, self.cfg.steps
        if self.step == 0:
            seed_everything(cfg.seed)  # as a single run's trainer does before its first step
        windows: list[list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]]] = [[] for _ in range(self.n)]
        evaluated: list[dict[str, float]] = [{} for _ in range(self.n)]
        desc = f"{self.tasks[0].name} x{self.n}" + (f" {progress_label}" if progress_label else "")
        bar = progress_bar(total=total, initial=self.step, desc=desc, unit="step", enabled=cfg.progress)
        reported = False  # which backends ran: logged after the first step, as a single run does
        try:
            while self.step < total:
                started = perf_counter()
                if not reported:
                    reset_backends()
                losses, metrics = self._train_step()
                for i in range(self.n):
                    windows[i].append((self.step, losses[i], {k: v[i] for k, v in metrics.items()}))
                self.step += 1
                if not reported:
                    for i in range(self.n):
                        self._log(
                            i, {"step": self.step, "kind": "backends", "backends": backends_in_use(), "kept_own_backend": []}
                        )
                    reported = True
                evaluate = self._boundary(self.step, cfg.eval_every, total)
                checkpoint = self._boundary(self.step, cfg.checkpoint_every, total)
                flush = evaluate or checkpoint or self._boundary(self.step, cfg.log_every, total)
                due = cfg.checkpoint_seconds > 0 and self.train_seconds - self._saved_at >= cfg.checkpoint_seconds
                checkpoint = checkpoint or (flush and due)  # a long stretch without one: save at a log step
                if flush and self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.train_seconds += perf_counter() - started
                if flush:
                    self._flush(windows, bar)
                    windows = [[] for _ in range(self.n)]
                if evaluate:
                    for i in self._active():
                        self._unstack(i)
                        evaluated[i] = self.tasks[i].evaluate()
                        self._log(i, {"step": self.step, "kind": "eval", **evaluated[i]})
                if checkpoint:
                    self.save()
        except KeyboardInterrupt:
            self.save()
            raise Interrupted(
                f"interrupted at step {self.step}; checkpoints saved in each run directory; continue with --resume"
            ) from None
        finally:
            bar.close()
        results: list[dict[str, Any] | None] = []
        for i, task in enumerate(self.tasks):
            if not self.active[i]:
                results.append(None)
                continue
            self._unstack(i)
            metrics = evaluated[i] or task.evaluate()
            task.export(self.run_dirs[i])
            write_curves_quietly(self.run_dirs[i])
            report_file = self.run_dirs[i] / "eval.json"
            report = json.loads(report_file.read_text()) if report_file.is_file() else {}
            results.append(
                {
                    "step": self.step,
                    **metrics,
                    **report,
                    "train_seconds": round(self.train_seconds, 3),
                    "run_dir": str(self.run_dirs[i]),
                }
            )
        return results

    def _active(self) -> list[int]:
        return [i for i in range(self.n) if self.active[i]]

    def _train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step of every signal: (losses (n,), metrics name -> (n,)), detached."""
        cfg, step = self.cfg, self.step
        for modules in self.scheduled:
            for module in modules:
                module.update(step, cfg.steps)
        factor = learning_rate_factor(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        for task in self.tasks:
            task.update(step, cfg.steps)
        batches = [task.sample(step) for task in self.tasks]
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            terms = self._sdf_terms(batches) if self.is_sdf else self._image_terms(batches)
        losses = torch.stack([loss for loss, _ in terms])
        kept = torch.tensor(self.active, device=losses.device)
        self.scaler.scale(torch.where(kept, losses, torch.zeros_like(losses)).sum()).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self._clip_per_signal(cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        names = list(terms[0][1])
        metrics = {name: torch.stack([m[name].detach().float() for _, m in terms]) for name in names}
        return losses.detach(), metrics

    def _image_terms(self, batches: list) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        coords = torch.stack([coords for coords, _ in batches])  # (n, B, 2)
        outputs = self._forward(self.params, coords).float()  # (n, B, C)
        return [task.fit_terms((outputs[i] - batches[i][1]) ** 2) for i, task in enumerate(self.tasks)]

    def _sdf_terms(self, batches: list) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        needs_gradient = self.tasks[0].needs_gradient
        x = torch.stack([batch["positions"] for batch in batches]).detach().requires_grad_(needs_gradient)  # (n, B, 3)
        predicted = self._forward(self.params, x).float()  # (n, B, n_lods)
        gradient = sdf_gradient(predicted[..., -1], x) if needs_gradient else None  # (n, B, 3): each signal's own
        return [
            task.loss_terms(batches[i], predicted[i], None if gradient is None else gradient[i])
            for i, task in enumerate(self.tasks)
        ]

    def _clip_per_signal(self, max_norm: float) -> None:
        """Scale each signal's gradient to a global norm of at most `max_norm` (as its own run would)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if not grads:
            return
        squares = torch.stack([g.float().pow(2).reshape(self.n, -1).sum(1) for g in grads]).sum(0)  # (n,)
        factor = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))

    @staticmethod
    def _boundary(step: int, every: int, last: int) -> bool:
        return step == last or (every > 0 and step % every == 0)

    def _flush(self, windows: list[list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]]], bar: tqdm) -> None:
        """Read the windows' losses once; a signal whose loss stopped being finite leaves the batch
        (its weights are zeroed so it cannot disturb the others); log the means per signal."""
        lr = self.optimizer.param_groups[0]["lr"]
        shown = []
        for i in self._active():
            window = windows[i]
            losses = torch.stack([loss.float() for _, loss, _ in window]).cpu()
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                bad = window[int((~finite).nonzero()[0, 0])][0]
                self.failures[i] = f"loss became {losses[~finite][0].item()} at step {bad + 1}; lower --lr"
                self.active[i] = False
                with torch.no_grad():
                    for value in self.params.values():
                        value[i].zero_()
                print(f"nfield: warning: {self.run_dirs[i]}: {self.failures[i]}; the other signals go on", file=sys.stderr)
                continue
            record: dict[str, Any] = {"step": self.step, "kind": "train", "loss": float(losses.mean())}
            for name in window[0][2]:
                record[f"train_{name}"] = float(torch.stack([m[name] for _, _, m in window]).mean())
            record["lr"] = lr
            record["train_seconds"] = round(self.train_seconds, 4)
            self._log(i, record)
            shown.append(record)
        bar.update(self.step - bar.n)
        if shown:
            keys = [k for k in shown[0] if k == "loss" or (k.startswith("train_") and k != "train_seconds")]
            bar.set_postfix({k.removeprefix("train_"): f"{sum(r[k] for r in shown) / len(shown):.4g}" for k in keys})

    def _log(self, i: int, record: dict[str, Any]) -> None:
        with open(self.run_dirs[i] / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # --- one signal at a time: weights, checkpoints -------------------------------------------------
    @torch.no_grad()
    def _unstack(self, i: int) -> None:
        """Copy signal i's weights into its task's own model (to evaluate, export or save it)."""
        for name, p in self.tasks[i].model.named_parameters():
            p.copy_(self.params[name][i])

    def _signal_optimizer(self, i: int) -> torch.optim.Adam:
        """An Adam over signal i's own model holding its slice of the stacked optimiser state: what a
        single run of it would hold at this step."""
        cfg, task = self.cfg, self.tasks[i]
        optimizer = torch.optim.Adam(task.param_groups(), betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        for group, stacked_group in zip(optimizer.param_groups, self.optimizer.param_groups):
            group["lr"] = stacked_group["lr"]
        own = dict(task.model.named_parameters())
        for name, stacked in self.params.items():
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
            self._unstack(i)
            state = {
                "step": self.step,
                "train_seconds": self.train_seconds,
                "optimizer": self._signal_optimizer(i).state_dict(),
                "scaler": self.scaler.state_dict(),
                "task": self.tasks[i].state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            }
            save_checkpoint(self.run_dirs[i], self.step, self.tasks[i].model, state, keep=self.cfg.keep_checkpoints)

    def _load_checkpoints(self) -> None:
        """Each task's newest checkpoint into its model and sampler; every signal must be at one step."""
        self._states = []
        for task, run_dir in zip(self.tasks, self.run_dirs):
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is None:
                raise NfieldError(f"{run_dir}: no checkpoint to resume from")
            load_model_weights(task.model, checkpoint)
            state = load_trainer_state(checkpoint)
            task.load_state_dict(state["task"])
            self._states.append(state)
        steps = {int(state["step"]) for state in self._states}
        if len(steps) != 1:
            raise NfieldError(f"signals at different steps ({sorted(steps)}) cannot resume as one stacked model")
        self.step = steps.pop()
        self.train_seconds = self._saved_at = float(self._states[0].get("train_seconds", 0.0))
        torch.set_rng_state(self._states[0]["rng_cpu"])
        for run_dir in self.run_dirs:
            truncate_metrics(run_dir / "metrics.jsonl", self.step)

    def _stack_optimizer_states(self) -> None:
        """The stacked Adam state from each signal's saved one (see `_signal_optimizer`)."""
        per_signal = []
        for task, state in zip(self.tasks, self._states):
            cfg = self.cfg
            optimizer = torch.optim.Adam(task.param_groups(), betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (KeyError, ValueError, RuntimeError) as err:
                raise NfieldError(f"a checkpoint's optimiser state does not match this run ({err})") from None
            own = dict(task.model.named_parameters())
            per_signal.append({name: optimizer.state.get(own[name], {}) for name in self.names})
        for name, stacked in self.params.items():
            states = [signal[name] for signal in per_signal]
            if states[0]:
                self.optimizer.state[stacked] = {
                    key: states[0][key].clone() if key == "step" else torch.stack([s[key] for s in states]).to(self.device)
                    for key in states[0]
                }
        del self._states
