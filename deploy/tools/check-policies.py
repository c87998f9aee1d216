#!/usr/bin/env python3
"""Fail when a managed policy in cloudformation/bosun.yaml differs from its deploy/iam/*.json file.

The template's Metadata.BosunPolicySources maps each ManagedPolicy resource to
its file. The file's placeholders are turned into the template's !Sub
variables (CLUSTER -> ${ClusterName}, BUCKET -> ${BucketName},
ACCOUNT -> ${AWS::AccountId}, REGION -> ${AWS::Region}, arn:aws: ->
arn:${AWS::Partition}:) and the two documents must then be equal. Every file in
iam/ must be named by exactly one resource.

Usage: check-policies.py [DEPLOY_DIR]   (needs PyYAML)
"""

import json
import pathlib
import re
import sys

import yaml

PLACEHOLDERS = [
    (re.compile(r"\bCLUSTER\b"), "${ClusterName}"),
    (re.compile(r"\bBUCKET\b"), "${BucketName}"),
    (re.compile(r"\bACCOUNT\b"), "${AWS::AccountId}"),
    (re.compile(r"\bREGION\b"), "${AWS::Region}"),
    (re.compile(r"^arn:aws:"), "arn:${AWS::Partition}:"),
]


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Sub x) as their long form ({"Fn::Sub": x})."""


def _intrinsic(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def from_file(value):
    """The file's document with placeholders replaced by !Sub variables."""
    if isinstance(value, dict):
        return {k: from_file(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_file(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in PLACEHOLDERS:
            value = pattern.sub(replacement, value)
    return value


def from_template(value):
    """The template's document with !Sub unwrapped to its string."""
    if isinstance(value, dict):
        if list(value) == ["Fn::Sub"] and isinstance(value["Fn::Sub"], str):
            return value["Fn::Sub"]
        return {k: from_template(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_template(v) for v in value]
    return value


def main(argv):
    deploy = pathlib.Path(argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    template = yaml.load((deploy / "cloudformation" / "bosun.yaml").read_text(), Loader=CfnLoader)
    sources = template["Metadata"]["BosunPolicySources"]
    resources = template["Resources"]
    failures = []

    named = sorted(sources.values())
    on_disk = sorted(str(p.relative_to(deploy)) for p in (deploy / "iam").glob("*.json"))
    if named != on_disk:
        failures.append(f"iam files {on_disk} are not the files the template names {named}")

    for logical_id, relative in sources.items():
        resource = resources.get(logical_id)
        if resource is None or resource.get("Type") != "AWS::IAM::ManagedPolicy":
            failures.append(f"{logical_id}: no AWS::IAM::ManagedPolicy of that name in the template")
            continue
        expected = from_file(json.loads((deploy / relative).read_text()))
        actual = from_template(resource["Properties"]["PolicyDocument"])
        if expected != actual:
            failures.append(
                f"{logical_id} differs from {relative}:\n"
                f"  file:     {json.dumps(expected, sort_keys=True)}\n"
                f"  template: {json.dumps(actual, sort_keys=True)}"
            )

    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"ok: {len(sources)} managed policies match deploy/iam/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
