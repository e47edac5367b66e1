"""The pieces every task trains and evaluates with; none of them knows a task.

- :mod:`models.training.spec`: :class:`~models.training.spec.TrainSpec`, what to train and how;
- :mod:`models.training.blocks`: which backbone parameters a finetune trains;
- :mod:`models.training.evaluation`: :class:`~models.training.evaluation.Evaluation`, the record
  of one evaluation;
- :mod:`models.training.plots`: the report's PNGs (matplotlib, Agg);
- :mod:`models.training.report`: ``report.json``, ``report.md`` and the plots of an evaluation.
"""
