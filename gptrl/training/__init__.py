"""The training pipeline (torch side): online RL teachers, Minari datasets from them, and behaviour cloning
of the causal transformer policy. Each stage is one module and one ``python -m`` entry point."""
