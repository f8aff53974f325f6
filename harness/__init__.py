"""What tests and benchmarks drive the node with: fakes of outside programs, sinks, a raw MQTT client."""
