#!/usr/bin/env python3
"""Operator side of the device tests: talks to the `edgedeploy server` on
loopback with boto3 as the admin (the server's DATA/admin-credentials).

    fleet.py DATA URL setup GROUP TAG=VALUE REV=BUNDLE...
        application "edgeapp", deployment group GROUP (instances tagged
        TAG=VALUE, OneAtATime), each BUNDLE (a tgz) uploaded to the bundle
        store (bucket edgedeploy-bundles, key edgeapp/REV.tgz) and
        registered. Prints the group's deploymentGroupId (the agent's
        folder under its deployment root).
    fleet.py DATA URL deploy GROUP REV
        CreateDeployment of REV; prints the deployment id.
    fleet.py DATA URL state DEPLOYMENT
        one line: "<status> <event>:<status>,..." of the deployment and of
        its only target's lifecycle events.
    fleet.py DATA URL wait DEPLOYMENT SECS
        waits for the deployment to end; prints
        "<status> failed=<event|-> installed=<yes|no> events=<event>:<status>,...
        message=<diagnostics message of the failed event>"; exit 0 when it
        ended (whatever the outcome), 1 on timeout.

"installed" says whether the target's Install event succeeded: the rule
the device tests use to know which revision must be on the disk.
"""
import os
import sys
import time

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_CONFIG_FILE"] = "/dev/null"

import boto3  # noqa: E402

APP = "edgeapp"
BUCKET = "edgedeploy-bundles"
TERMINAL = ("Succeeded", "Failed", "Stopped")


def clients(data, url):
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(data, "admin-credentials")
    cd = boto3.client("codedeploy", endpoint_url=url, region_name="us-east-1")
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      config=boto3.session.Config(s3={"addressing_style": "path"}))
    return cd, s3


def revision(rev):
    return {"revisionType": "S3",
            "s3Location": {"bucket": BUCKET, "key": f"{APP}/{rev}.tgz", "bundleType": "tgz"}}


def setup(cd, s3, group, tag, bundles):
    key, value = tag.split("=", 1)
    cd.create_application(applicationName=APP)
    cd.create_deployment_group(
        applicationName=APP, deploymentGroupName=group,
        serviceRoleArn="arn:aws:iam::000000000000:role/edgedeploy",
        onPremisesInstanceTagFilters=[{"Key": key, "Value": value, "Type": "KEY_AND_VALUE"}])
    s3.create_bucket(Bucket=BUCKET)
    for pair in bundles:
        rev, path = pair.split("=", 1)
        with open(path, "rb") as f:
            s3.put_object(Bucket=BUCKET, Key=f"{APP}/{rev}.tgz", Body=f)
        cd.register_application_revision(applicationName=APP, revision=revision(rev),
                                         description=f"device test revision {rev}")
    g = cd.get_deployment_group(applicationName=APP, deploymentGroupName=group)
    print(g["deploymentGroupInfo"]["deploymentGroupId"])


def deploy(cd, group, rev):
    d = cd.create_deployment(applicationName=APP, deploymentGroupName=group, revision=revision(rev),
                             description=f"device test: revision {rev}")
    print(d["deploymentId"])


def target_events(cd, dep):
    ids = cd.list_deployment_targets(deploymentId=dep).get("targetIds", [])
    if not ids:
        return []
    t = cd.get_deployment_target(deploymentId=dep, targetId=ids[0])["deploymentTarget"]
    return t.get("instanceTarget", {}).get("lifecycleEvents", [])


def summary(cd, dep):
    info = cd.get_deployment(deploymentId=dep)["deploymentInfo"]
    events = target_events(cd, dep)
    return info, events


def events_text(events):
    return ",".join(f"{e['lifecycleEventName']}:{e['status']}" for e in events) or "-"


def state(cd, dep):
    info, events = summary(cd, dep)
    print(f"{info['status']} {events_text(events)}")


def wait(cd, dep, secs):
    deadline = time.time() + secs
    while True:
        info, events = summary(cd, dep)
        if info["status"] in TERMINAL:
            break
        if time.time() > deadline:
            print(f"TIMEOUT {info['status']} events={events_text(events)}")
            return 1
        time.sleep(0.5)
    failed = next((e for e in events if e["status"] == "Failed"), None)
    installed = any(e["lifecycleEventName"] == "Install" and e["status"] == "Succeeded" for e in events)
    message = ""
    if failed:
        message = (failed.get("diagnostics") or {}).get("message", "").replace("\n", " ")[:160]
    elif info.get("errorInformation"):
        message = info["errorInformation"].get("message", "")[:160]
    print(f"{info['status']} failed={failed['lifecycleEventName'] if failed else '-'} "
          f"installed={'yes' if installed else 'no'} events={events_text(events)} message={message}")
    return 0


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    data, url, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    cd, s3 = clients(data, url)
    if cmd == "setup":
        setup(cd, s3, args[0], args[1], args[2:])
    elif cmd == "deploy":
        deploy(cd, args[0], args[1])
    elif cmd == "state":
        state(cd, args[0])
    elif cmd == "wait":
        sys.exit(wait(cd, args[0], float(args[1])))
    else:
        sys.exit(f"unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main()
