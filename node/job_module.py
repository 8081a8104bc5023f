"""A job's wasm module in the block store (issue 16): a module too large to travel in its spec
(over consensus.jobfile.WASM_INLINE_PREFERRED) is named there by CID (`JobSpec.wasm_cid`, the CID
`ipfs add --cid-version 1` gives its bytes) and moves as blocks, like a job's inputs.

Contract:
- submitting: `store_module(blocks, spec, module)` imports `module` (the bytes its user sent with
  the spec) into the block store, pinned under `submission_owner(spec)`: the owner of the
  submission's inputs, released with them when the job has its certificate or the submission is
  refused (`JobInputs.release_submission`). LocalProtocolError `missing_module` when no module was
  sent or its CID is not the spec's (nothing is stored then), `store_full` when the store's cap
  cannot hold it.
- executing: `fetch_module(content, job_hex, spec, providers)` makes the module's DAG present
  (`Content.fetch_dag` from `providers`: the submitter first, then connected peers), pinned under
  `run_owner(job_hex)` with the job's inputs (released when the job ends here,
  `JobInputs.release`), and reads its bytes from the store: the size its root block states is
  checked against WASM_MODULE_MAX before anything is read, and the bytes read are counted against
  that size (a DAG whose blocks hold other than its root states is refused), so no more than
  WASM_MODULE_MAX bytes are ever held in memory. The fetch itself stops once more than
  WASM_MODULE_MAX (and the dag-pb nodes' margin, node/transfer.py `size_bound`) has arrived. `InputsUnavailable` when no provider serves some block
  or the store cannot hold them; ValueError when the module is too large or is not a file. Either way the executor withdraws
  with that reason. The blocks stay in the store once the job ends, evictable: a later job with
  the same module fetches nothing.
"""

from __future__ import annotations

import trio

from distributeai.consensus.cid import cid_text
from distributeai.consensus.errors import LocalProtocolError
from distributeai.consensus.messages import WASM_MODULE_MAX, JobSpec
from distributeai.consensus.unixfs import BadBlock, file_cid

from .blockstore import BlockStoreFull, MissingBlock
from .job_inputs import InputsUnavailable, dag_size, present_for_run, run_owner, submission_owner
from .outputs_serving import read_file
from .transfer import size_bound


async def store_module(blocks, spec: JobSpec, module: bytes | None) -> None:
    """`module` into the store for the submission of `spec` (see the module docstring)."""
    if module is None:
        raise LocalProtocolError("missing_module", "the spec names a wasm module by CID; send the module too")
    if await trio.to_thread.run_sync(file_cid, module) != spec.wasm_cid:
        raise LocalProtocolError("missing_module", f"the module sent is not the one the spec names "
                                                   f"({cid_text(spec.wasm_cid)})")

    async def chunks():
        yield module

    try:
        await blocks.add_stream(chunks(), "module.wasm", pin=submission_owner(spec))
    except BlockStoreFull as exc:
        raise LocalProtocolError("store_full", f"the block store cannot hold the wasm module ({exc}): "
                                               "raise node start --store-max") from None


async def fetch_module(content, job_hex: str, spec: JobSpec, providers: list[str]) -> bytes:
    """The bytes of the module `spec` names by CID, fetched if need be (see the module docstring)."""
    blocks, cid = content.blocks, spec.wasm_cid
    await present_for_run(blocks, content.fetch_dag, cid, providers, run_owner(job_hex),
                          size_bound(WASM_MODULE_MAX), f"the wasm module {cid_text(cid)}")
    try:
        size = await dag_size(blocks, cid)
        if size > WASM_MODULE_MAX:
            raise ValueError(f"the wasm module {cid_text(cid)} has {size} bytes; this node loads at most "
                             f"{WASM_MODULE_MAX}")
        parts, total = [], 0
        async for data in read_file(blocks, cid):
            total += len(data)
            if total > size:
                raise ValueError(f"the wasm module {cid_text(cid)} holds more bytes than its root states ({size})")
            parts.append(data)
        if total != size:
            raise ValueError(f"the wasm module {cid_text(cid)} holds {total} bytes, its root states {size}")
    except MissingBlock as exc:  # evicted under us, which the pin prevents
        raise InputsUnavailable(f"the wasm module {cid_text(cid)}: a block went missing ({exc!r})") from None
    except BadBlock as exc:
        raise ValueError(f"the wasm module {cid_text(cid)} is not a file: {exc}") from None
    return b"".join(parts)
