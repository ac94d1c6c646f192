"""'Provision network': the environment's VPC, subnets, gateway, routes and security groups (the
nodes', and the load balancer's with SLIPWAY_INGRESS=nlb), found by tag and created only where missing."""

from __future__ import annotations

from chalicelib import aws
from chalicelib.aws import network
from chalicelib.settings import get_settings
from chalicelib.steps.common import deployment_of, tags_for
from chalicelib.steps.registry import task
from chalicelib.steps.state import DeployRun, Network


@task("Provision network")
def ensure_network(event: DeployRun) -> Network:
    deployment = deployment_of(event)
    settings = get_settings()
    converged = network.ensure_network(
        aws.client("ec2"),
        aws.client("ec2", retries=False),
        environment=deployment["environment"],
        tags_for=lambda role: tags_for(deployment, role),
        vpc_cidr=settings.vpc_cidr,
        subnet_cidrs=settings.subnet_cidrs,
        service_ports=settings.service_ports,
        ingress=settings.ingress,
    )
    return Network(
        vpc_id=converged["vpc_id"],
        subnet_ids=converged["subnet_ids"],
        internet_gateway_id=converged["internet_gateway_id"],
        route_table_id=converged["route_table_id"],
        security_group_id=converged["security_group_id"],
        lb_security_group_id=converged["lb_security_group_id"],
        created=converged["created"],
    )
