"""Running loopline on one machine: the local launcher (Kafka, Redis, an LLM server as plain
processes) and the demo. Nothing in the runtime imports this package."""
