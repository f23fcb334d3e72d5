"""The train process: ``worker`` consumes train jobs and publishes gated, signed adapters;
``dataset`` reads a job's examples back from ``labelled`` and assembles its training data."""
