"""The tools around the network, apart from the runtime: the network simulator, the decoder
fuzzer, the benchmark, the local devnet and the sandbox timing (tools/README.md).

tools/ may import every runtime package; no runtime package (consensus, p2p, sandbox, node,
bootstrap) imports tools. The CLI imports it for the tool commands only."""
