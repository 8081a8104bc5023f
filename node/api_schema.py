"""The OpenAPI 3.0 document of the node's REST API (node/api.py), served at /openapi.json.

Kept beside the code it describes; tests/test_api.py checks every route and status the API can
answer against it (schemathesis), so a change to one without the other fails there.
"""

from __future__ import annotations

from typing import Any

from distributeai.consensus.fields import PLATFORM_CLASSES, TRUST_THRESHOLD_MAX, VERIFICATION_MODES
from distributeai.consensus.messages import MAX_REPLICAS, MAX_TOTAL_RESULTS

JOB_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "SHA-256 of the signed job spec"}
CID = {"type": "string", "description": "a CID as text: CIDv1 base32 (bafy..., bafk...) or CIDv0 (Qm...)"}
STATUSES = ["announced", "bidding", "running", "verified", "failed", "nondeterministic"]


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, ref: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


UNAUTHORIZED = _error("A bearer token is required (the API listens off loopback, or --http-auth token)")
BAD_ID = _error("Not a job id (field `id`)")
NO_JOB = _error("No such job known to this node")
NOT_ALLOWED = _error("Method not allowed")


def _job_path(extra: dict | None = None) -> list:
    return [{"name": "id", "in": "path", "required": True, "schema": JOB_ID}, *([extra] if extra else [])]


def openapi_document() -> dict[str, Any]:
    job_file = {
        "type": "object",
        "description": "A job file: the seed's format (name, docker_image, command, required_cpu, required_memory) "
                       "or this project's names. Unknown fields are refused, naming the field.",
        "properties": {
            "name": {"type": "string", "maxLength": 256},
            "docker_image": {"type": "string", "description": "the seed's name for `image`"},
            "image": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "required_cpu": {"type": "number", "description": "cores (the seed's name for `cpu`)"},
            "cpu": {"type": "number"},
            "required_memory": {"oneOf": [{"type": "integer"}, {"type": "string"}],
                                "description": "MiB, or a size with a unit: \"512m\", \"1g\", \"256Mi\""},
            "memory_mb": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
            "timeout": {"type": "integer", "minimum": 1, "description": "seconds a run may take"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS, "description": "n executors"},
            "quorum": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS, "description": "k that must agree"},
            "target_nresults": {"type": "integer", "description": "BOINC's name for replicas"},
            "min_quorum": {"type": "integer", "description": "BOINC's name for quorum"},
            "max_error_results": {"type": "integer", "minimum": 0},
            "max_total_results": {"type": "integer", "minimum": 1, "maximum": MAX_TOTAL_RESULTS},
            "result_deadline": {"type": "integer", "minimum": 1},
            "price": {"type": "integer", "minimum": 0, "description": "credits to each agreeing executor"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "stdin": {"type": "string"},
            "gpu": {"type": "boolean"},
            "sandbox": {"type": "string", "enum": ["container", "wasm"],
                        "description": "container (the default) or wasm (needs wasm_module)"},
            "wasm_module": {"type": "string", "format": "byte", "description": "a WASI module, base64"},
            "fuel": {"type": "integer", "minimum": 1},
            "price_per_mfuel": {"type": "integer", "minimum": 0},
            "tasks": {"type": "array", "items": {"type": "array", "items": {"type": "string"}},
                      "description": "a batch: one argument list per task"},
            "out_max_bytes": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
                              "description": "output quota in bytes, or a size like '100m' (default 1 GiB)"},
            "out_max_files": {"type": "integer", "minimum": 0, "description": "output quota in entries (default 10000)"},
            "inputs": {"type": "array", "maxItems": 64,
                       "items": {"type": "object", "required": ["cid", "path"], "additionalProperties": False,
                                 "properties": {"cid": {"type": "string", "description": "a CID on the network"},
                                                "path": {"type": "string", "description": "where the job sees it, under /in"}}},
                       "description": "files or directories already on the network, by CID, mounted read-only at "
                                      "/in/PATH; the node fetches each whole and states its size in the spec"},
            "verification": {"type": "string", "enum": list(VERIFICATION_MODES),
                             "description": "replicate (k-of-n on every job, the default) or adaptive (a trusted "
                                            "executor runs it alone, spot-checked)"},
            "trust_threshold": {"type": "integer", "minimum": 1, "maximum": TRUST_THRESHOLD_MAX,
                                "description": "adaptive: consecutive valid results an executor needs to run a job "
                                               "alone (default 10)"},
            "spot_check_floor": {"type": "number", "minimum": 0, "maximum": 1,
                                 "description": "adaptive: the least chance that a single run is checked (default 0.05)"},
            "compare": {"type": "object", "required": ["kind"], "additionalProperties": False,
                        "properties": {"kind": {"type": "string", "enum": ["exact", "numeric"]},
                                       "rel": {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
                                       "abs": {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
                                       "files": {"type": "array", "items": {"type": "string"}}},
                        "description": "how results are compared: exact (the default) or numeric, numbers in stdout "
                                       "and the named output files within |a-b| <= abs + rel*max(|a|,|b|)"},
            "homogeneous": {"type": "array", "items": {"type": "string", "enum": list(PLATFORM_CLASSES)},
                            "description": "platform classes all executors share (their signed bids' arch, cpu "
                                           "vendor, gpu model)"},
        },
        "additionalProperties": False,
    }
    job = {
        "type": "object",
        "required": ["id", "job_id", "status"],
        "properties": {
            "id": JOB_ID, "job_id": JOB_ID,
            "status": {"type": "string", "enum": STATUSES},
            "reason": {"type": "string"},
            "name": {"type": "string"}, "role": {"type": "string"},
            "wasm_cid": {"type": "string", "nullable": True, "description": "the CID of a wasm module too large for the spec"},
            "stdout": {"type": "string", "nullable": True},
            "exit_code": {"type": "integer", "nullable": True},
            "result_hash": {"type": "string", "nullable": True},
            "executors": {"type": "array", "items": {"type": "object"}},
            "verification": {"type": "string", "nullable": True,
                             "description": "how the certificate reached its verdict: single, spot_checked or "
                                            "replicated; null before it exists"},
            "executors_run": {"type": "integer", "nullable": True,
                              "description": "executors whose results the certificate carries"},
            "rejected": {"type": "string", "nullable": True,
                         "description": "why this node refuses a single-run claim (its executor was not trusted)"},
            "verification_note": {"type": "string", "description": "the verdict in words, e.g. a single run"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "DistributeAI node API", "version": "1",
                 "description": "The seed's REST API, served by a node for the jobs its user submits. Errors are "
                                "JSON {\"error\": message, \"field\": name}."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "Required only off loopback (DATA_DIR/http.token)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                                         "limit": {"type": "integer"}}},
                "JobFile": job_file,
                "Job": job,
                "JobList": {"type": "object", "required": ["jobs", "total", "limit", "offset"],
                            "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                                           "total": {"type": "integer"}, "limit": {"type": "integer"},
                                           "offset": {"type": "integer"}}},
                "Result": {"type": "object", "required": ["id", "status"],
                           "properties": {"id": JOB_ID, "status": {"type": "string"}, "stdout": {"type": "string"},
                                          "exit_code": {"type": "integer"}, "result_hash": {"type": "string"},
                                          "timed_out": {"type": "boolean"}, "oom_killed": {"type": "boolean"},
                                          "timeout_s": {"type": "integer"}, "memory_mb": {"type": "integer"},
                                          "stdout_truncated": {"type": "boolean"},
                                          "stdout_size": {"type": "integer", "nullable": True,
                                                          "description": "bytes the job wrote to stdout, 1 MiB + 1 "
                                                                         "for more than 1 MiB; null if not stated"},
                                          "stderr": {"type": "string", "description": "the certified stderr (its "
                                                     "first or last 1.5 KiB when cut: stderr_part)"},
                                          "stderr_part": {"type": "string", "enum": ["all", "first", "last"]},
                                          "stderr_truncated": {"type": "boolean"},
                                          "files": {"type": "array", "items": {
                                              "type": "object", "description": "an output file: path, size "
                                              "(bytes) and cid (its CIDv1 as ipfs add --cid-version 1 gives it)",
                                              "properties": {"path": {"type": "string"}, "size": {"type": "integer"},
                                                             "cid": {"type": "string"}}}},
                                          "verification": {"type": "string", "nullable": True,
                                                           "description": "single, spot_checked or replicated"},
                                          "executors_run": {"type": "integer", "nullable": True},
                                          "rejected": {"type": "string", "nullable": True},
                                          "verification_note": {"type": "string"},
                                          "outputs": {"type": "object", "description": "status (ok or "
                                                      "out_quota_exceeded), files, listed, manifest_truncated, "
                                                      "skipped, skipped_entries [{name, reason}], quota"}}},
                "Blob": {"type": "object", "required": ["cid", "size"],
                         "properties": {"cid": CID, "size": {"type": "integer", "minimum": 0},
                                        "announced": {"type": "boolean",
                                                      "description": "a DHT provider record was published"}}},
                "BlobList": {"type": "object", "required": ["blobs"],
                             "properties": {"blobs": {"type": "array", "items": {
                                 "type": "object", "description": "a blob added or fetched here, newest first",
                                 "properties": {"cid": CID, "name": {"type": "string"},
                                                "size": {"type": "integer"}, "added": {"type": "integer"}}}}}},
                "Nodes": {"type": "object", "required": ["nodes", "total"],
                          "properties": {"self": {"type": "string"}, "total": {"type": "integer"},
                                         "nodes": {"type": "array", "items": {
                                             "type": "object", "properties": {
                                                 "peer_id": {"type": "string"}, "connected": {"type": "boolean"}, "bootstrap": {"type": "boolean"},
                                                 "reputation": {"type": "integer", "nullable": True},
                                                 "last_seen_ms": {"type": "integer", "nullable": True}}}}}},
                "Stats": {"type": "object", "required": ["total_jobs", "active_nodes"],
                          "properties": {"total_jobs": {"type": "integer"}, "completed_jobs": {"type": "integer"},
                                         "failed_jobs": {"type": "integer"}, "pending_jobs": {"type": "integer"},
                                         "active_nodes": {"type": "integer"}, "known_nodes": {"type": "integer"},
                                         "jobs_by_status": {"type": "object"}}},
            },
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/api/v1/jobs": {
                "post": {
                    "summary": "Sign a job with this node's key and announce it",
                    "operationId": "submitJob",
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/JobFile"}}}},
                    "responses": {"201": {**_json("The job, as announced", "Job"), "links": {
                                      "GetJob": {"operationId": "getJob", "parameters": {"id": "$response.body#/id"}},
                                      "GetResult": {"operationId": "getResult",
                                                    "parameters": {"id": "$response.body#/id"}}}},
                                  "400": _error("A field is wrong (named in `field`); nothing was sent"),
                                  "401": UNAUTHORIZED,
                                  "409": _error("This node cannot pay for the job (field `price`), or its quorum is larger than the nodes it can reach (field `quorum`), or an input cannot be fetched from its peers (field `inputs`)"),
                                  "413": _error("The body is over the limit (1 MiB)"),
                                  "503": _error("The node's disk is full: nothing was stored or sent; "
                                                "try again later (Retry-After)")},
                },
                "get": {
                    "summary": "The jobs this node knows, newest first",
                    "operationId": "listJobs",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**31}},
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": STATUSES}},
                        {"name": "role", "in": "query",
                         "schema": {"type": "string", "enum": ["submitter", "executor", "observer"]}},
                    ],
                    "responses": {"200": _json("One page of jobs", "JobList"),
                                  "400": _error("A query parameter is wrong (named in `field`)"),
                                  "401": UNAUTHORIZED},
                },
            },
            "/api/v1/jobs/{id}": {"get": {
                "summary": "One job, as `job status --json` shows it",
                "operationId": "getJob",
                "parameters": _job_path(),
                "responses": {"200": _json("The job", "Job"), "400": BAD_ID, "401": UNAUTHORIZED, "404": NO_JOB}}},
            "/api/v1/jobs/{id}/result": {"get": {
                "summary": "The verified result: stdout, exit code, result hash, output files",
                "operationId": "getResult",
                "parameters": _job_path(),
                "responses": {"200": _json("The verified result", "Result"), "400": BAD_ID, "401": UNAUTHORIZED,
                              "404": NO_JOB, "409": _error("The job is not verified (yet)")}}},
            "/api/v1/jobs/{id}/outputs/{path}": {"get": {
                "summary": "One verified output file, streamed; its blocks fetched by CID from the agreeing executors",
                "parameters": _job_path({"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}),
                "responses": {"200": {"description": "The file's bytes",
                                      "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                          "format": "binary"}}}},
                              "400": BAD_ID, "401": UNAUTHORIZED,
                              "404": _error("No such job or output file"),
                              "409": _error("The job is not verified (yet)"),
                              "502": _error("No agreeing executor served the file, or no room for it here")}}},
            "/api/v1/blobs": {
                "post": {
                    "summary": "Upload a file (the body, streamed, any size up to the block store's cap); it is "
                               "imported as blocks, pinned and announced, as `blob add`",
                    "operationId": "addBlob",
                    "parameters": [{"name": "name", "in": "query", "description": "a file name, shown by blob ls",
                                    "schema": {"type": "string", "maxLength": 255}}],
                    "requestBody": {"required": False, "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"201": {**_json("Its CID (as ipfs add --cid-version 1 gives it) and size", "Blob"),
                                          "links": {"GetBlob": {"operationId": "getBlob",
                                                                "parameters": {"cid": "$response.body#/cid"}}}},
                                  "400": _error("The name is wrong (field `name`)"),
                                  "401": UNAUTHORIZED,
                                  "408": _error("The body stopped arriving (nothing for 10 s)"),
                                  "413": _error("The body is over the block store's cap"),
                                  "503": _error("The node's disk is full; try again later (Retry-After)"),
                                  "507": _error("Pinned blocks leave no room for it in the block store")},
                },
                "get": {
                    "summary": "The blobs added to or fetched into this node's block store, newest first",
                    "operationId": "listBlobs",
                    "responses": {"200": _json("Blobs", "BlobList"), "401": UNAUTHORIZED},
                },
            },
            "/api/v1/blobs/{cid}": {"get": {
                "summary": "A file by CID, streamed; its blocks fetched first (each verified) from the connected "
                           "peers, then the DHT's providers, when not held here",
                "operationId": "getBlob",
                "parameters": [{"name": "cid", "in": "path", "required": True, "schema": CID}],
                "responses": {"200": {"description": "The file's bytes (Content-Length: its size)",
                                      "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                          "format": "binary"}}}},
                              "400": _error("Not a CID, or the CID of a directory (field `cid`)"),
                              "401": UNAUTHORIZED,
                              "404": _error("No peer serves it (the reason says which blocks and whom it asked)"),
                              "502": _error("No room for it here, or its blocks are malformed")}}},
            "/api/v1/nodes": {"get": {
                "summary": "The peers this node knows, with reputation and when last seen",
                "responses": {"200": _json("Peers", "Nodes"), "401": UNAUTHORIZED}}},
            "/stats": {"get": {
                "summary": "This node's view of the network's totals",
                "responses": {"200": _json("Totals", "Stats"), "401": UNAUTHORIZED}}},
            "/api/v1/stats": {"get": {
                "summary": "The same as /stats",
                "responses": {"200": _json("Totals", "Stats"), "401": UNAUTHORIZED}}},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {}}},
                              "401": UNAUTHORIZED}}},
        },
    }
