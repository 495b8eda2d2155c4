"""The training library behind the commands in ``trainers/``: data pipelines,
recipes, the training loop and its callbacks, distribution, loading trained
models, evaluation, export and the tuner. Commands are thin shells over it;
nothing here parses command lines."""
