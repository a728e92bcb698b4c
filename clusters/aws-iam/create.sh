#!/usr/bin/env bash
# Creates the two instance profiles clusters/aws-gpu.yaml uses: ssl-ray-head and ssl-ray-worker.
#   bash clusters/aws-iam/create.sh BUCKET        (once per AWS account; needs IAM admin rights)
# The worker role may read and write s3://BUCKET only; the head role may launch and end EC2 instances,
# pass the worker role to them (iam:PassRole, nothing else) and use the bucket too (the Tune driver runs
# on the head). Re-running it updates the policies.
set -euo pipefail
BUCKET=${1:?usage: bash clusters/aws-iam/create.sh BUCKET}
HERE=$(cd "$(dirname "$0")" && pwd)
ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
TMP=$(mktemp -d)
for who in worker head; do
  sed -e "s/BUCKET/$BUCKET/g" -e "s/ACCOUNT_ID/$ACCOUNT_ID/g" "$HERE/$who-policy.json" > "$TMP/$who.json"
  aws iam get-role --role-name "ssl-ray-$who" >/dev/null 2>&1 ||
    aws iam create-role --role-name "ssl-ray-$who" --assume-role-policy-document "file://$HERE/ec2-trust.json" >/dev/null
  aws iam put-role-policy --role-name "ssl-ray-$who" --policy-name "ssl-ray-$who" --policy-document "file://$TMP/$who.json"
  if ! aws iam get-instance-profile --instance-profile-name "ssl-ray-$who" >/dev/null 2>&1; then
    aws iam create-instance-profile --instance-profile-name "ssl-ray-$who" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "ssl-ray-$who" --role-name "ssl-ray-$who"
  fi
done
rm -rf "$TMP"
echo "instance profiles ssl-ray-head and ssl-ray-worker ready (bucket $BUCKET, account $ACCOUNT_ID)"
