"""Rollout backend ``hf_cpu``: HF transformers ``generate`` behind verl's rollout-server interface.

verl's V1 trainer talks to rollout *servers*: ``LLMServerManager`` builds one ``RolloutReplica``
per rollout world (``RolloutReplicaRegistry``), the agent loop calls
``server.generate(prompt_ids, sampling_params, request_id, ...)`` on the replica's server actor
through the load balancer, and after each actor update the training worker pushes its weights
into the rollout object that lives in its own process (``BaseRollout.update_weights``, looked up
in ``verl.workers.rollout.base._ROLLOUT_REGISTRY``). Three pieces fill those slots:

* :class:`HFGenerationServer` - a Ray actor holding an HF causal LM on the CPU; token in, token
  out, with the sampling parameters vLLM receives (temperature 0 = greedy, top_k -1 = off).
* :class:`HFCPUReplica` - starts that actor (``num_cpus=0``: it only runs while the trainer
  waits on rollouts, so it books no core) and exposes it as the replica's server.
* :class:`HFCPURolloutAdapter` - the worker-side rollout: ``update_weights`` copies the named
  tensors the engine yields into the server (rank 0 of each replica sends).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from typing import Any

import ray
import torch

from .sampling import generation_kwargs, max_new_tokens

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf_cpu"


def server_actor_name(replica_rank: int, name_suffix: str = "") -> str:
    """Ray actor name of replica ``replica_rank``'s server (the adapter finds it by this name)."""
    return f"{ROLLOUT_NAME}_server_{replica_rank}{name_suffix}"


class HFGenerationServer:
    """Token-in/token-out generation with ``transformers`` on the CPU (one request at a time)."""

    def __init__(self, rollout_config, model_config, replica_rank: int = 0, num_threads: int = 1):
        from transformers import AutoModelForCausalLM
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        torch.set_num_threads(max(1, int(num_threads)))
        self.config = omega_conf_to_dataclass(rollout_config)
        self.replica_rank = replica_rank
        if not isinstance(model_config, HFModelConfig):
            model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        path = model_config.local_path
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = self.model.generation_config.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        self.seed = int(getattr(self.config, "seed", 0) or 0)
        self.global_steps: int | None = None
        self.weight_version = 0
        # requests of one prompt seen at the current weights: each gets its own random stream
        self._draws: dict[bytes, int] = {}
        # Generation runs in a worker thread; one at a time keeps the model's state consistent.
        self._lock = threading.Lock()

    # -- generation ------------------------------------------------------------------------
    def _request_seed(self, prompt_ids: list[int]) -> int:
        """The seed of one sampling request: (rollout.seed, replica, weight version, prompt, draw).

        The agent loop sends requests concurrently, so their arrival order varies from run to run;
        a seed keyed by what is asked, not by when, makes a run's samples reproducible and gives
        two runs from the same model and seed the same samples (the n requests of one prompt are
        interchangeable, so which one gets which draw number does not matter). Call under the lock.
        """
        key = hashlib.blake2b(repr((self.seed, self.replica_rank, self.weight_version, list(prompt_ids))).encode(),
                              digest_size=16).digest()
        draw = self._draws.get(key, 0)
        self._draws[key] = draw + 1
        return int.from_bytes(hashlib.blake2b(key + draw.to_bytes(8, "little"), digest_size=8).digest(), "little") >> 1

    def _generate_blocking(self, prompt_ids: list[int], sampling_params: dict[str, Any]) -> dict:
        n_new = max_new_tokens(
            len(prompt_ids),
            sampling_params,
            response_length=self.config.response_length,
            prompt_length=self.config.prompt_length,
            max_model_len=self.config.max_model_len,
        )
        kwargs = generation_kwargs(sampling_params, self.eos_token_ids, self.pad_token_id)
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        with self._lock, torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._request_seed(prompt_ids))
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=n_new,
                return_dict_in_generate=True,
                output_logits=True,
                **kwargs,
            )
        new_tokens = out.sequences[0, input_ids.shape[1]:].tolist()
        # generate pads a finished row only in a batch; a single row stops at its EOS.
        logits = torch.stack(out.logits, dim=1)[0].float() if out.logits else torch.empty(0)
        log_probs = None
        if sampling_params.get("logprobs") and new_tokens:
            lp = torch.log_softmax(logits, dim=-1)
            log_probs = lp[torch.arange(len(new_tokens)), torch.tensor(new_tokens)].tolist()
        return {"token_ids": new_tokens, "log_probs": log_probs}

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        **_ignored: Any,
    ):
        from verl.workers.rollout.replica import TokenOutput

        if image_data or video_data or audio_data:
            raise NotImplementedError("hf_cpu rollout is text-only")
        result = await asyncio.to_thread(self._generate_blocking, list(prompt_ids), dict(sampling_params))
        return TokenOutput(
            token_ids=result["token_ids"],
            log_probs=result["log_probs"],
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    # -- weights ---------------------------------------------------------------------------
    def load_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Copy the trainer's weights in.

        Every tensor must name a parameter or buffer of the model, and every parameter must be
        sent (tied parameters once): a partial sync would silently sample from stale weights.
        """
        state = self.model.state_dict()
        unknown = sorted(set(named_tensors) - set(state))
        if unknown:
            raise KeyError(f"hf_cpu rollout: weights for unknown parameters {unknown[:5]}")
        missing = sorted(name for name, _ in self.model.named_parameters() if name not in named_tensors)
        if missing:
            raise ValueError(f"hf_cpu rollout: weight update lacks parameters {missing[:5]}")
        with self._lock, torch.no_grad():
            for name, tensor in named_tensors.items():
                state[name].copy_(tensor.to(state[name].dtype))
            self.weight_version += 1
            self._draws.clear()
        if global_steps is not None:
            self.global_steps = global_steps
        return len(named_tensors)

    def get_weight_version(self) -> int:
        return self.weight_version

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # -- the control surface the replica / checkpoint manager calls --------------------------
    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self):
        return None

    async def wait_for_requests_to_drain(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


def _replica_base():
    from verl.workers.rollout.replica import RolloutReplica

    return RolloutReplica


def load_replica_class() -> type:
    """Loader for ``RolloutReplicaRegistry`` (verl calls it when ``rollout.name=hf_cpu``)."""
    base = _replica_base()

    class HFCPUReplica(base):
        """One HF-generation server per replica; the actor books no CPU (see module docstring)."""

        def rollout_worker_use_gpu(self) -> bool:
            return False

        async def launch_servers(self):
            name = server_actor_name(self.replica_rank, self.name_suffix)
            server_cls = ray.remote(HFGenerationServer)
            self.servers = [
                server_cls.options(name=name, num_cpus=0, max_concurrency=self.max_concurrency).remote(
                    rollout_config=self.config,
                    model_config=self.model_config,
                    replica_rank=self.replica_rank,
                )
            ]
            self._server_handle = self.servers[0]
            # The load balancer keys servers by address; there is no HTTP endpoint, so a label.
            self._server_address = name

    return HFCPUReplica


def _base_rollout():
    from verl.workers.rollout.base import BaseRollout

    return BaseRollout


class HFCPURolloutAdapter(_base_rollout()):
    """Worker-side rollout object: pushes trainer weights to this worker's replica server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        replica_world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // replica_world
        self.is_sender = rank % replica_world == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf_cpu rollout receives full named tensors, not {wire_format!r}")
        # Every rank drains the generator (it may gather shards collectively); rank 0 sends.
        named = {name: tensor.detach().to("cpu").clone() for name, tensor in weights}
        if self.is_sender:
            await self._server_handle().load_weights.remote(named, kwargs.get("global_steps"))
