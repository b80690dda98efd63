#!/usr/bin/env python3
"""Prints botocore's CodeDeploy service model extended with edgedeploy's URL
revisions (revisionType "URL", urlLocation {url, sha256, bundleType}), so
that the AWS CLI and boto3 can send them. See docs/revisions.md.

    python3 examples/url-revision-model.py > codedeploy-edgedeploy.json
    aws configure add-model --service-name codedeploy \
        --service-model file://codedeploy-edgedeploy.json

(The AWS CLI then uses it for `aws deploy ...` of this user; remove
~/.aws/models/codedeploy to go back. For boto3 alone, put the file at
DIR/codedeploy/2014-10-06/service-2.json and set AWS_DATA_PATH=DIR.)
"""
import json
import sys

import botocore.loaders

model = botocore.loaders.Loader().load_service_model("codedeploy", "service-2")
shapes = model["shapes"]
types = shapes["RevisionLocationType"]["enum"]
if "URL" not in types:
    types.append("URL")
shapes["UrlLocation"] = {
    "type": "structure",
    "members": {
        "url": {"shape": "UrlLocationUrl", "documentation": "<p>http(s) URL of the bundle (edgedeploy).</p>"},
        "sha256": {"shape": "UrlLocationSha256", "documentation": "<p>Hex SHA-256 of the bundle.</p>"},
        "bundleType": {"shape": "BundleType", "documentation": "<p>tar, tgz or zip.</p>"},
    },
    "documentation": "<p>A bundle at an http(s) URL, verified by its SHA-256 (an edgedeploy extension).</p>",
}
shapes["UrlLocationUrl"] = {"type": "string"}
shapes["UrlLocationSha256"] = {"type": "string"}
shapes["RevisionLocation"]["members"]["urlLocation"] = {
    "shape": "UrlLocation",
    "documentation": "<p>For revisionType URL (edgedeploy).</p>",
}
json.dump(model, sys.stdout, indent=1)
sys.stdout.write("\n")
