"""The one Powertools Logger and Metrics of the app; every module logs through these."""

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="slipway")
metrics = Metrics(namespace="Slipway", service="slipway")
