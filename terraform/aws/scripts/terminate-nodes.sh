#!/bin/bash
# Terminate every node of a Cumulus cluster: the EC2 instances tagged cumulus:cluster=<cluster>, in
# any state but terminated, and wait until they are gone. Needs the aws CLI and credentials allowed
# to describe and terminate them. Usage: terminate-nodes.sh CLUSTER REGION
set -euo pipefail
cluster=${1:?usage: terminate-nodes.sh CLUSTER REGION}
region=${2:?usage: terminate-nodes.sh CLUSTER REGION}

ids=$(aws ec2 describe-instances --region "$region" \
  --filters "Name=tag:cumulus:cluster,Values=$cluster" \
            "Name=instance-state-name,Values=pending,running,stopping,stopped,shutting-down" \
  --query 'Reservations[].Instances[].InstanceId' --output text)
if [ -z "${ids//[[:space:]]/}" ]; then
  echo "cumulus: no nodes of cluster $cluster in $region"
  exit 0
fi
# shellcheck disable=SC2086  # one argument per instance id
aws ec2 terminate-instances --region "$region" --instance-ids $ids --output text >/dev/null
echo "cumulus: terminating nodes of cluster $cluster in $region:" $ids
# shellcheck disable=SC2086
aws ec2 wait instance-terminated --region "$region" --instance-ids $ids
echo "cumulus: nodes of cluster $cluster terminated"
