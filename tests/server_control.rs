//! The control API against a real server process, through real boto3:
//! applications, deployment configurations, deployment groups, on-premises
//! instances, revisions, the refusals of bad requests and bad signatures
//! with AWS's exception names, and `edgedeploy register-instance`.
#![cfg(feature = "server")]

mod server_common;

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};
use server_common::{ServerProcess, write_credentials};

fn codes(value: &Value) -> Vec<String> {
    value.as_array().expect("a list of errors").iter().map(|e| e[0].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn applications_are_created_read_renamed_and_deleted() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        created = cd.create_application(applicationName="web", tags=[{"Key": "team", "Value": "ops"}])
        app = cd.get_application(applicationName="web")["application"]
        batch = cd.batch_get_applications(applicationNames=["web"])["applicationsInfo"]
        cd.update_application(applicationName="web", newApplicationName="web2")
        renamed = cd.get_application(applicationName="web2")["application"]
        errors = [
            error_of(cd.create_application, applicationName="web2"),
            error_of(cd.create_application, applicationName=""),
            error_of(cd.create_application, applicationName="has space"),
            error_of(cd.create_application, applicationName="x" * 101),
            error_of(cd.create_application, applicationName="lam", computePlatform="Lambda"),
            error_of(cd.create_application, applicationName="t", tags=[{"Key": "", "Value": "v"}]),
            error_of(cd.get_application, applicationName="web"),
            error_of(cd.batch_get_applications, applicationNames=["web2", "nope"]),
            error_of(cd.batch_get_applications, applicationNames=[f"a{i}" for i in range(101)]),
            error_of(cd.update_application, applicationName="nope", newApplicationName="other"),
        ]
        cd.create_application(applicationName="other")
        errors.append(error_of(cd.update_application, applicationName="web2", newApplicationName="other"))
        cd.delete_application(applicationName="web2")
        errors.append(error_of(cd.get_application, applicationName="web2"))
        cd.delete_application(applicationName="web2")
        emit({"created": created, "app": app, "batch": batch, "renamed": renamed, "errors": errors,
              "left": cd.list_applications()["applications"]})
        "#,
    );
    let app = &out["app"];
    assert_eq!(app["applicationId"], out["created"]["applicationId"]);
    assert_eq!(app["applicationName"], "web");
    assert_eq!(app["computePlatform"], "Server");
    assert_eq!(app["linkedToGitHub"], false);
    assert!(app["createTime"].as_str().is_some_and(|t| t.starts_with("20")), "{app}");
    assert_eq!(out["batch"][0]["applicationId"], app["applicationId"]);
    assert_eq!(out["renamed"]["applicationId"], app["applicationId"]);
    assert_eq!(out["renamed"]["applicationName"], "web2");
    assert_eq!(
        codes(&out["errors"]),
        [
            "ApplicationAlreadyExistsException",
            "ApplicationNameRequiredException",
            "InvalidApplicationNameException",
            "InvalidApplicationNameException",
            "InvalidComputePlatformException",
            "InvalidTagsToAddException",
            "ApplicationDoesNotExistException",
            "ApplicationDoesNotExistException",
            "BatchLimitExceededException",
            "ApplicationDoesNotExistException",
            "ApplicationAlreadyExistsException",
            "ApplicationDoesNotExistException",
        ]
    );
    assert_eq!(out["errors"][0][1], 400);
    assert!(out["errors"][3][2].as_str().unwrap().contains("101 characters"), "{}", out["errors"][3]);
    assert_eq!(out["left"], json!(["other"]));
}

#[test]
fn list_applications_pages_through_120_applications() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        for i in range(120):
            cd.create_application(applicationName=f"app-{i:03}")
        first = cd.list_applications()
        second = cd.list_applications(nextToken=first["nextToken"])
        paged = [n for page in cd.get_paginator("list_applications").paginate() for n in page["applications"]]
        emit({"first": first["applications"], "token": first["nextToken"], "second": second["applications"],
              "second_has_token": "nextToken" in second, "paged": paged,
              "bad": error_of(cd.list_applications, nextToken="not-a-token")})
        "#,
    );
    let expected: Vec<String> = (0..120).map(|i| format!("app-{i:03}")).collect();
    assert_eq!(out["first"].as_array().unwrap().len(), 100);
    assert_eq!(out["first"][0], "app-000");
    assert_eq!(out["first"][99], "app-099");
    assert!(!out["token"].as_str().unwrap().contains("app-"), "the token is opaque: {}", out["token"]);
    assert_eq!(out["second"].as_array().unwrap().len(), 20);
    assert_eq!(out["second"][0], "app-100");
    assert_eq!(out["second_has_token"], false);
    assert_eq!(out["paged"], json!(expected));
    assert_eq!(out["bad"][0], "InvalidNextTokenException");
}

#[test]
fn deployment_configs_predefined_and_custom() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        predefined = {n: cd.get_deployment_config(deploymentConfigName=n)["deploymentConfigInfo"]
                      for n in ["CodeDeployDefault.AllAtOnce", "CodeDeployDefault.HalfAtATime", "CodeDeployDefault.OneAtATime"]}
        created = cd.create_deployment_config(deploymentConfigName="ThreeQuarters",
                                              minimumHealthyHosts={"type": "FLEET_PERCENT", "value": 75})
        custom = cd.get_deployment_config(deploymentConfigName="ThreeQuarters")["deploymentConfigInfo"]
        cd.create_deployment_config(deploymentConfigName="TwoUp", computePlatform="Server",
                                    minimumHealthyHosts={"type": "HOST_COUNT", "value": 2})
        listed = cd.list_deployment_configs()["deploymentConfigsList"]
        cd.create_application(applicationName="app")
        cd.create_deployment_group(applicationName="app", deploymentGroupName="g", serviceRoleArn="arn:aws:iam::1:role/r",
                                   deploymentConfigName="TwoUp")
        errors = [
            error_of(cd.create_deployment_config, deploymentConfigName="ThreeQuarters",
                     minimumHealthyHosts={"type": "HOST_COUNT", "value": 1}),
            error_of(cd.create_deployment_config, deploymentConfigName="CodeDeployDefault.OneAtATime",
                     minimumHealthyHosts={"type": "HOST_COUNT", "value": 1}),
            error_of(cd.create_deployment_config, deploymentConfigName="",
                     minimumHealthyHosts={"type": "HOST_COUNT", "value": 1}),
            error_of(cd.create_deployment_config, deploymentConfigName="All",
                     minimumHealthyHosts={"type": "FLEET_PERCENT", "value": 100}),
            error_of(cd.create_deployment_config, deploymentConfigName="Neg",
                     minimumHealthyHosts={"type": "HOST_COUNT", "value": -1}),
            error_of(cd.create_deployment_config, deploymentConfigName="Most",
                     minimumHealthyHosts={"type": "MOST_CONCURRENCY", "value": 1}),
            error_of(cd.create_deployment_config, deploymentConfigName="None"),
            error_of(cd.create_deployment_config, deploymentConfigName="Lam", computePlatform="Lambda",
                     minimumHealthyHosts={"type": "HOST_COUNT", "value": 1}),
            error_of(cd.delete_deployment_config, deploymentConfigName="CodeDeployDefault.AllAtOnce"),
            error_of(cd.delete_deployment_config, deploymentConfigName="TwoUp"),
            error_of(cd.get_deployment_config, deploymentConfigName="Nope"),
        ]
        cd.delete_deployment_group(applicationName="app", deploymentGroupName="g")
        cd.delete_deployment_config(deploymentConfigName="TwoUp")
        cd.delete_deployment_config(deploymentConfigName="TwoUp")
        errors.append(error_of(cd.get_deployment_config, deploymentConfigName="TwoUp"))
        emit({"predefined": predefined, "created": created, "custom": custom, "listed": listed, "errors": errors})
        "#,
    );
    let mhh = |name: &str| out["predefined"][name]["minimumHealthyHosts"].clone();
    assert_eq!(mhh("CodeDeployDefault.AllAtOnce"), json!({"type": "HOST_COUNT", "value": 0}));
    assert_eq!(mhh("CodeDeployDefault.HalfAtATime"), json!({"type": "FLEET_PERCENT", "value": 50}));
    assert_eq!(mhh("CodeDeployDefault.OneAtATime"), json!({"type": "MOST_CONCURRENCY", "value": 1}));
    assert_eq!(out["predefined"]["CodeDeployDefault.OneAtATime"]["computePlatform"], "Server");
    let custom = &out["custom"];
    assert_eq!(custom["deploymentConfigId"], out["created"]["deploymentConfigId"]);
    assert_eq!(custom["deploymentConfigName"], "ThreeQuarters");
    assert_eq!(custom["minimumHealthyHosts"], json!({"type": "FLEET_PERCENT", "value": 75}));
    assert_eq!(custom["computePlatform"], "Server");
    assert_eq!(
        out["listed"],
        json!([
            "CodeDeployDefault.AllAtOnce",
            "CodeDeployDefault.HalfAtATime",
            "CodeDeployDefault.OneAtATime",
            "ThreeQuarters",
            "TwoUp"
        ])
    );
    assert_eq!(
        codes(&out["errors"]),
        [
            "DeploymentConfigAlreadyExistsException",
            "DeploymentConfigAlreadyExistsException",
            "DeploymentConfigNameRequiredException",
            "InvalidMinimumHealthyHostValueException",
            "InvalidMinimumHealthyHostValueException",
            "InvalidMinimumHealthyHostValueException",
            "InvalidMinimumHealthyHostValueException",
            "InvalidComputePlatformException",
            "InvalidOperationException",
            "DeploymentConfigInUseException",
            "DeploymentConfigDoesNotExistException",
            "DeploymentConfigDoesNotExistException",
        ]
    );
}

#[test]
fn deployment_groups_keep_their_settings_and_select_by_tags() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        cd.create_application(applicationName="shop")
        role = "arn:aws:iam::000000000000:role/deployer"
        filters = [{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}, {"Key": "canary", "Type": "KEY_ONLY"}]
        tag_set = {"onPremisesTagSetList": [[{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}],
                                            [{"Value": "web", "Type": "VALUE_ONLY"}]]}
        created = cd.create_deployment_group(
            applicationName="shop", deploymentGroupName="by-filters", serviceRoleArn=role,
            onPremisesInstanceTagFilters=filters,
            triggerConfigurations=[{"triggerName": "t", "triggerTargetArn": "arn:aws:sns:us-east-1:0:topic",
                                    "triggerEvents": ["DeploymentSuccess", "DeploymentFailure"]}],
            autoRollbackConfiguration={"enabled": True, "events": ["DEPLOYMENT_FAILURE"]},
            alarmConfiguration={"enabled": False, "alarms": [{"name": "cpu"}]},
            deploymentStyle={"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"},
            outdatedInstancesStrategy="IGNORE", tags=[{"Key": "owner", "Value": "me"}])
        cd.create_deployment_group(applicationName="shop", deploymentGroupName="by-set", serviceRoleArn=role,
                                   deploymentConfigName="CodeDeployDefault.HalfAtATime", onPremisesTagSet=tag_set)
        by_filters = cd.get_deployment_group(applicationName="shop", deploymentGroupName="by-filters")["deploymentGroupInfo"]
        by_set = cd.get_deployment_group(applicationName="shop", deploymentGroupName="by-set")["deploymentGroupInfo"]
        listed = cd.list_deployment_groups(applicationName="shop")
        batch = cd.batch_get_deployment_groups(applicationName="shop", deploymentGroupNames=["by-set", "nope"])
        one = [{"Key": "a", "Value": "b", "Type": "KEY_AND_VALUE"}]
        errors = [
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="by-set", serviceRoleArn=role),
            error_of(cd.create_deployment_group, applicationName="nope", deploymentGroupName="g", serviceRoleArn=role),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g"),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="", serviceRoleArn=role),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     deploymentConfigName="Nope"),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     onPremisesInstanceTagFilters=one, onPremisesTagSet={"onPremisesTagSetList": [one]}),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     onPremisesTagSet={"onPremisesTagSetList": [one, one, one, one]}),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     onPremisesInstanceTagFilters=[{"Key": "a", "Type": "KEY_AND_VALUE"}]),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     deploymentStyle={"deploymentType": "BLUE_GREEN", "deploymentOption": "WITH_TRAFFIC_CONTROL"}),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     triggerConfigurations=[{"triggerName": "t", "triggerTargetArn": "a", "triggerEvents": ["Whenever"]}]),
            error_of(cd.create_deployment_group, applicationName="shop", deploymentGroupName="g", serviceRoleArn=role,
                     ec2TagFilters=[{"Key": "a", "Value": "b", "Type": "KEY_AND_VALUE"}]),
            error_of(cd.get_deployment_group, applicationName="shop", deploymentGroupName="nope"),
            error_of(cd.list_deployment_groups, applicationName="nope"),
        ]
        updated = cd.update_deployment_group(applicationName="shop", currentDeploymentGroupName="by-filters",
                                             newDeploymentGroupName="renamed", deploymentConfigName="CodeDeployDefault.AllAtOnce",
                                             onPremisesInstanceTagFilters=[{"Key": "env", "Value": "dev", "Type": "KEY_AND_VALUE"}])
        renamed = cd.get_deployment_group(applicationName="shop", deploymentGroupName="renamed")["deploymentGroupInfo"]
        errors += [
            error_of(cd.get_deployment_group, applicationName="shop", deploymentGroupName="by-filters"),
            error_of(cd.update_deployment_group, applicationName="shop", currentDeploymentGroupName="renamed",
                     newDeploymentGroupName="by-set"),
            error_of(cd.update_deployment_group, applicationName="shop", currentDeploymentGroupName="renamed",
                     onPremisesTagSet=tag_set),
        ]
        deleted = cd.delete_deployment_group(applicationName="shop", deploymentGroupName="renamed")
        again = cd.delete_deployment_group(applicationName="shop", deploymentGroupName="renamed")
        cd.delete_application(applicationName="shop")
        cd.create_application(applicationName="shop")
        emit({"created": created, "by_filters": by_filters, "by_set": by_set, "listed": listed, "batch": batch,
              "errors": errors, "updated": updated, "renamed": renamed, "deleted": deleted, "again": again,
              "after_app_delete": cd.list_deployment_groups(applicationName="shop")["deploymentGroups"]})
        "#,
    );
    let g = &out["by_filters"];
    assert_eq!(g["deploymentGroupId"], out["created"]["deploymentGroupId"]);
    assert_eq!(g["applicationName"], "shop");
    assert_eq!(g["deploymentGroupName"], "by-filters");
    assert_eq!(g["deploymentConfigName"], "CodeDeployDefault.OneAtATime");
    assert_eq!(g["serviceRoleArn"], "arn:aws:iam::000000000000:role/deployer");
    assert_eq!(g["computePlatform"], "Server");
    assert_eq!(
        g["onPremisesInstanceTagFilters"],
        json!([{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}, {"Key": "canary", "Type": "KEY_ONLY"}])
    );
    assert_eq!(g["triggerConfigurations"][0]["triggerEvents"], json!(["DeploymentSuccess", "DeploymentFailure"]));
    assert_eq!(g["autoRollbackConfiguration"], json!({"enabled": true, "events": ["DEPLOYMENT_FAILURE"]}));
    assert_eq!(g["alarmConfiguration"]["alarms"], json!([{"name": "cpu"}]));
    assert_eq!(
        g["deploymentStyle"],
        json!({"deploymentType": "IN_PLACE", "deploymentOption": "WITHOUT_TRAFFIC_CONTROL"})
    );
    assert_eq!(g["outdatedInstancesStrategy"], "IGNORE");
    assert!(g.get("tags").is_none(), "DeploymentGroupInfo has no tags: {g}");
    let s = &out["by_set"];
    assert_eq!(s["deploymentConfigName"], "CodeDeployDefault.HalfAtATime");
    assert_eq!(s["onPremisesTagSet"]["onPremisesTagSetList"][1], json!([{"Value": "web", "Type": "VALUE_ONLY"}]));
    assert_eq!(s["onPremisesInstanceTagFilters"], json!([]));
    assert_eq!(out["listed"]["deploymentGroups"], json!(["by-filters", "by-set"]));
    assert_eq!(out["listed"]["applicationName"], "shop");
    assert_eq!(out["batch"]["deploymentGroupsInfo"][0]["deploymentGroupName"], "by-set");
    assert!(out["batch"]["errorMessage"].as_str().unwrap().contains("nope"));
    assert_eq!(
        codes(&out["errors"]),
        [
            "DeploymentGroupAlreadyExistsException",
            "ApplicationDoesNotExistException",
            "RoleRequiredException",
            "DeploymentGroupNameRequiredException",
            "DeploymentConfigDoesNotExistException",
            "InvalidOnPremisesTagCombinationException",
            "TagSetListLimitExceededException",
            "InvalidTagException",
            "InvalidDeploymentStyleException",
            "InvalidTriggerConfigException",
            "InvalidEC2TagException",
            "DeploymentGroupDoesNotExistException",
            "ApplicationDoesNotExistException",
            "DeploymentGroupDoesNotExistException",
            "DeploymentGroupAlreadyExistsException",
            "InvalidOnPremisesTagCombinationException",
        ]
    );
    assert_eq!(out["updated"]["hooksNotCleanedUp"], json!([]));
    let r = &out["renamed"];
    assert_eq!(r["deploymentGroupId"], g["deploymentGroupId"]);
    assert_eq!(r["deploymentConfigName"], "CodeDeployDefault.AllAtOnce");
    assert_eq!(r["onPremisesInstanceTagFilters"], json!([{"Key": "env", "Value": "dev", "Type": "KEY_AND_VALUE"}]));
    assert_eq!(r["triggerConfigurations"], g["triggerConfigurations"], "settings not given are kept");
    assert_eq!(out["deleted"]["hooksNotCleanedUp"], json!([]));
    assert_eq!(out["again"]["hooksNotCleanedUp"], json!([]));
    assert_eq!(out["after_app_delete"], json!([]), "deleting the application deleted its groups");
}

#[test]
fn on_premises_instances_are_registered_tagged_listed_and_deregistered() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        sts = "arn:aws:sts::000000000000:assumed-role/device/"
        for name, env, role in [("pi-1", "prod", "web"), ("pi-2", "prod", "db"), ("pi-3", "dev", "web"), ("pi-4", "dev", "db")]:
            cd.register_on_premises_instance(instanceName=name, iamSessionArn=sts + name)
            cd.add_tags_to_on_premises_instances(instanceNames=[name], tags=[{"Key": "env", "Value": env},
                                                                           {"Key": "role", "Value": role}])
        cd.register_on_premises_instance(instanceName="user-box", iamUserArn="arn:aws:iam::000000000000:user/box")
        cd.add_tags_to_on_premises_instances(instanceNames=["pi-1", "pi-3"], tags=[{"Key": "canary", "Value": ""}])
        got = cd.get_on_premises_instance(instanceName="pi-1")["instanceInfo"]
        user = cd.get_on_premises_instance(instanceName="user-box")["instanceInfo"]
        def names(**kw):
            return cd.list_on_premises_instances(**kw)["instanceNames"]
        lists = {
            "all": names(),
            "prod": names(tagFilters=[{"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}]),
            "web_or_canary": names(tagFilters=[{"Value": "web", "Type": "VALUE_ONLY"}, {"Key": "canary", "Type": "KEY_ONLY"}]),
        }
        cd.remove_tags_from_on_premises_instances(instanceNames=["pi-3"], tags=[{"Key": "canary", "Value": ""}])
        lists["canary_after_remove"] = names(tagFilters=[{"Key": "canary", "Type": "KEY_ONLY"}])
        cd.deregister_on_premises_instance(instanceName="pi-4")
        cd.deregister_on_premises_instance(instanceName="pi-4")
        lists["registered"] = names(registrationStatus="Registered")
        lists["deregistered"] = names(registrationStatus="Deregistered")
        gone = cd.get_on_premises_instance(instanceName="pi-4")["instanceInfo"]
        batch = cd.batch_get_on_premises_instances(instanceNames=["pi-2", "pi-4", "nope"])["instanceInfos"]
        errors = [
            error_of(cd.register_on_premises_instance, instanceName="pi-1", iamSessionArn=sts + "other"),
            error_of(cd.register_on_premises_instance, instanceName="pi-9", iamSessionArn=sts + "pi-1"),
            error_of(cd.register_on_premises_instance, instanceName="pi-9", iamUserArn="arn:aws:iam::000000000000:user/box"),
            error_of(cd.register_on_premises_instance, instanceName="pi-9"),
            error_of(cd.register_on_premises_instance, instanceName="pi-9", iamSessionArn=sts + "pi-9",
                     iamUserArn="arn:aws:iam::000000000000:user/pi-9"),
            error_of(cd.register_on_premises_instance, instanceName="pi-9", iamSessionArn="not-an-arn"),
            error_of(cd.register_on_premises_instance, instanceName="", iamSessionArn=sts + "x"),
            error_of(cd.register_on_premises_instance, instanceName="bad name", iamSessionArn=sts + "x"),
            error_of(cd.get_on_premises_instance, instanceName="nope"),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=["nope"], tags=[{"Key": "a", "Value": "b"}]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=["pi-4"], tags=[{"Key": "a", "Value": "b"}]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=["pi-1"], tags=[]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=[], tags=[{"Key": "a", "Value": "b"}]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=["pi-1"], tags=[{"Key": "", "Value": "b"}]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=[f"i{n}" for n in range(101)],
                     tags=[{"Key": "a", "Value": "b"}]),
            error_of(cd.add_tags_to_on_premises_instances, instanceNames=["pi-1"],
                     tags=[{"Key": f"k{n}", "Value": "v"} for n in range(60)]),
            error_of(cd.list_on_premises_instances, registrationStatus="Sleeping"),
            error_of(cd.list_on_premises_instances, tagFilters=[{"Key": "a", "Type": "ANY"}]),
            error_of(cd.batch_get_on_premises_instances, instanceNames=[f"i{n}" for n in range(101)]),
        ]
        cd.register_on_premises_instance(instanceName="pi-4", iamSessionArn=sts + "pi-4")
        again = cd.get_on_premises_instance(instanceName="pi-4")["instanceInfo"]
        emit({"got": got, "user": user, "lists": lists, "gone": gone, "batch": batch, "errors": errors, "again": again})
        "#,
    );
    let got = &out["got"];
    assert_eq!(got["instanceName"], "pi-1");
    assert_eq!(got["instanceArn"], "arn:aws:codedeploy:us-east-1:000000000000:instance/pi-1");
    assert_eq!(got["iamSessionArn"], "arn:aws:sts::000000000000:assumed-role/device/pi-1");
    assert!(got.get("iamUserArn").is_none() && got.get("deregisterTime").is_none(), "{got}");
    assert!(got["registerTime"].as_str().is_some_and(|t| t.starts_with("20")));
    assert_eq!(
        got["tags"],
        json!([{"Key": "canary", "Value": ""}, {"Key": "env", "Value": "prod"}, {"Key": "role", "Value": "web"}])
    );
    assert_eq!(out["user"]["iamUserArn"], "arn:aws:iam::000000000000:user/box");
    let lists = &out["lists"];
    assert_eq!(lists["all"], json!(["pi-1", "pi-2", "pi-3", "pi-4", "user-box"]));
    assert_eq!(lists["prod"], json!(["pi-1", "pi-2"]));
    assert_eq!(lists["web_or_canary"], json!(["pi-1", "pi-3"]));
    assert_eq!(lists["canary_after_remove"], json!(["pi-1"]));
    assert_eq!(lists["registered"], json!(["pi-1", "pi-2", "pi-3", "user-box"]));
    assert_eq!(lists["deregistered"], json!(["pi-4"]));
    assert!(out["gone"]["deregisterTime"].is_string(), "{}", out["gone"]);
    assert_eq!(out["gone"]["tags"].as_array().unwrap().len(), 2, "a deregistered instance keeps its tags");
    let batch: Vec<&str> =
        out["batch"].as_array().unwrap().iter().map(|i| i["instanceName"].as_str().unwrap()).collect();
    assert_eq!(batch, ["pi-2", "pi-4"]);
    assert_eq!(
        codes(&out["errors"]),
        [
            "InstanceNameAlreadyRegisteredException",
            "IamSessionArnAlreadyRegisteredException",
            "IamUserArnAlreadyRegisteredException",
            "IamArnRequiredException",
            "MultipleIamArnsProvidedException",
            "InvalidIamSessionArnException",
            "InstanceNameRequiredException",
            "InvalidInstanceNameException",
            "InstanceNotRegisteredException",
            "InstanceNotRegisteredException",
            "InstanceNotRegisteredException",
            "TagRequiredException",
            "InstanceNameRequiredException",
            "InvalidTagException",
            "InstanceLimitExceededException",
            "TagLimitExceededException",
            "InvalidRegistrationStatusException",
            "InvalidTagFilterException",
            "BatchLimitExceededException",
        ]
    );
    assert!(out["again"].get("deregisterTime").is_none(), "registered again: {}", out["again"]);
    assert_eq!(out["again"]["tags"], json!([]), "registering again starts without tags");
}

#[test]
fn revisions_are_registered_read_listed_and_filtered() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        import time
        cd = client()
        cd.create_application(applicationName="app")
        def s3(key, bucket="bundles", **extra):
            return {"revisionType": "S3", "s3Location": dict(bucket=bucket, key=key, bundleType="tgz", **extra)}
        gh = {"revisionType": "GitHub", "gitHubLocation": {"repository": "me/app", "commitId": "0123abcd"}}
        cd.register_application_revision(applicationName="app", revision=s3("app/v1.tgz"), description="first")
        time.sleep(0.01)
        cd.register_application_revision(applicationName="app", revision=s3("app/v2.tgz", eTag="abc"))
        time.sleep(0.01)
        cd.register_application_revision(applicationName="app", revision=s3("other/v3.tgz", bucket="elsewhere"))
        time.sleep(0.01)
        cd.register_application_revision(applicationName="app", revision=gh)
        cd.register_application_revision(applicationName="app", revision=s3("app/v1.tgz"), description="first, again")
        got = cd.get_application_revision(applicationName="app", revision=s3("app/v1.tgz"))
        batch = cd.batch_get_application_revisions(applicationName="app", revisions=[gh, s3("missing.tgz")])
        def keys(**kw):
            out = []
            for r in cd.list_application_revisions(applicationName="app", **kw)["revisions"]:
                out.append(r["s3Location"]["key"] if r["revisionType"] == "S3" else r["gitHubLocation"]["commitId"])
            return out
        lists = {
            "default": keys(),
            "descending": keys(sortBy="registerTime", sortOrder="descending"),
            "bucket": keys(s3Bucket="bundles"),
            "prefix": keys(s3Bucket="bundles", s3KeyPrefix="app/v2"),
            "deployed": keys(deployed="include"),
        }
        errors = [
            error_of(cd.register_application_revision, applicationName="nope", revision=s3("x.tgz")),
            error_of(cd.register_application_revision, applicationName="app"),
            error_of(cd.register_application_revision, applicationName="app", revision={"revisionType": "S3", "s3Location": {"bucket": "b"}}),
            error_of(cd.register_application_revision, applicationName="app", revision=s3("x.rar") | {"s3Location": {"bucket": "b", "key": "k", "bundleType": "rar"}}),
            error_of(cd.register_application_revision, applicationName="app", revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "{}"}}),
            error_of(cd.register_application_revision, applicationName="app", revision=s3("x.tgz"), description="d" * 101),
            error_of(cd.get_application_revision, applicationName="app", revision=s3("missing.tgz")),
            error_of(cd.list_application_revisions, applicationName="app", s3KeyPrefix="app/"),
            error_of(cd.list_application_revisions, applicationName="app", sortBy="size"),
            error_of(cd.list_application_revisions, applicationName="app", sortOrder="sideways"),
            error_of(cd.list_application_revisions, applicationName="nope"),
        ]
        cd.delete_application(applicationName="app")
        cd.create_application(applicationName="app")
        emit({"got": got, "batch": batch, "lists": lists, "errors": errors,
              "after_app_delete": cd.list_application_revisions(applicationName="app")["revisions"]})
        "#,
    );
    let got = &out["got"];
    assert_eq!(got["applicationName"], "app");
    assert_eq!(
        got["revision"],
        json!({"revisionType": "S3", "s3Location": {"bucket": "bundles", "key": "app/v1.tgz", "bundleType": "tgz"}})
    );
    let info = &got["revisionInfo"];
    assert_eq!(info["description"], "first, again");
    assert_eq!(info["deploymentGroups"], json!([]));
    assert!(info["registerTime"].is_string() && info.get("firstUsedTime").is_none(), "{info}");
    assert_eq!(out["batch"]["revisions"][0]["revisionLocation"]["gitHubLocation"]["commitId"], "0123abcd");
    assert_eq!(out["batch"]["revisions"][0]["genericRevisionInfo"]["deploymentGroups"], json!([]));
    assert!(out["batch"]["errorMessage"].as_str().unwrap().contains("missing.tgz"));
    let lists = &out["lists"];
    assert_eq!(lists["default"], json!(["app/v1.tgz", "app/v2.tgz", "other/v3.tgz", "0123abcd"]));
    assert_eq!(lists["descending"], json!(["0123abcd", "other/v3.tgz", "app/v2.tgz", "app/v1.tgz"]));
    assert_eq!(lists["bucket"], json!(["app/v1.tgz", "app/v2.tgz"]));
    assert_eq!(lists["prefix"], json!(["app/v2.tgz"]));
    assert_eq!(lists["deployed"], json!([]));
    assert_eq!(
        codes(&out["errors"]),
        [
            "ApplicationDoesNotExistException",
            "RevisionRequiredException",
            "InvalidRevisionException",
            "InvalidRevisionException",
            "InvalidRevisionException",
            "DescriptionTooLongException",
            "RevisionDoesNotExistException",
            "BucketNameFilterRequiredException",
            "InvalidSortByException",
            "InvalidSortOrderException",
            "ApplicationDoesNotExistException",
        ]
    );
    assert_eq!(out["after_app_delete"], json!([]), "deleting the application deleted its revisions");
}

/// The admin's key, from the server's admin-credentials file.
fn admin_key(server: &ServerProcess) -> (String, String) {
    edgedeploy::server::auth::read_shared_credentials(&server.admin_credentials_file()).expect("admin credentials")
}

#[test]
fn admin_credentials_are_a_private_default_profile() {
    let server = ServerProcess::start();
    let path = server.admin_credentials_file();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("[default]\n"), "{text}");
    let out = server.boto3_ok("emit(client().list_applications())");
    assert_eq!(out["applications"], json!([]));
}

#[test]
fn control_api_refuses_bad_signatures_with_aws_exception_names() {
    let server = ServerProcess::start();
    let (id, secret) = admin_key(&server);
    let out = server.boto3_ok(&format!(
        r#"
        call = lambda c: error_of(c.list_applications)
        emit({{
            "unsigned": call(client(signature_version=botocore.UNSIGNED)),
            "bad_signature": call(client(key=("{id}", "{secret}x"))),
            "unknown_key": call(client(key=("AKIANOTAKEY000000000", "{secret}"))),
        }})
        "#
    ));
    let refusal = |case: &str| (out[case][0].as_str().unwrap().to_string(), out[case][1].as_u64().unwrap());
    assert_eq!(refusal("unsigned"), ("MissingAuthenticationTokenException".into(), 403));
    assert_eq!(refusal("bad_signature"), ("InvalidSignatureException".into(), 403));
    assert_eq!(refusal("unknown_key"), ("UnrecognizedClientException".into(), 403));
}

/// Calls ListApplications signed by our own signer with X-Amz-Date `at`
/// (epoch seconds); returns the status and the body.
fn list_applications_signed_at(server: &ServerProcess, key: &(String, String), at: u64) -> (u16, Value) {
    call_signed(server, key, at, "CodeDeploy_20141006.ListApplications", &[])
}

/// Calls operation `target` signed by our own signer with X-Amz-Date `at`,
/// leaving the headers named in `unsigned` out of the signature (they are
/// still sent); returns the status and the body.
fn call_signed(
    server: &ServerProcess,
    key: &(String, String),
    at: u64,
    target: &str,
    unsigned: &[&str],
) -> (u16, Value) {
    use edgedeploy::protocol::sigv4::{self, Credentials};
    let body = b"{}";
    let amz_date = edgedeploy::clock::amz_date(at);
    let headers: Vec<(String, String)> = [
        ("content-type", "application/x-amz-json-1.1"),
        ("host", server.endpoint().trim_start_matches("http://")),
        ("x-amz-date", amz_date.as_str()),
        ("x-amz-target", target),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let signed: Vec<(String, String)> =
        headers.iter().filter(|(n, _)| !unsigned.contains(&n.as_str())).cloned().collect();
    let payload = sigv4::sha256_hex(body);
    let request = sigv4::Request {
        method: "POST",
        path: "/",
        query: &[],
        headers: &signed,
        payload_sha256: &payload,
        service: "codedeploy",
    };
    let credentials = Credentials { access_key_id: key.0.clone(), secret_access_key: key.1.clone() };
    let authorization = sigv4::authorization(&credentials, &amz_date, "us-east-1", &request);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut call = agent.post(format!("{}/", server.endpoint())).header("authorization", authorization.as_str());
    for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
        call = call.header(name.as_str(), value.as_str());
    }
    let mut response = call.send(&body[..]).expect("calling the server");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("reading the answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[test]
fn a_signature_more_than_15_minutes_off_is_refused_as_expired() {
    let server = ServerProcess::start();
    let key = admin_key(&server);
    let now = edgedeploy::clock::now_epoch().0;
    let (status, body) = list_applications_signed_at(&server, &key, now);
    assert_eq!((status, &body["applications"]), (200, &json!([])), "the hand-made signature is right: {body}");
    for at in [now - 16 * 60, now + 16 * 60] {
        let (status, body) = list_applications_signed_at(&server, &key, at);
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["__type"], "InvalidSignatureException");
        assert!(body["message"].as_str().unwrap().contains("Signature expired"), "{body}");
    }
    let (status, _) = list_applications_signed_at(&server, &key, now - 14 * 60);
    assert_eq!(status, 200, "14 minutes off is within AWS's 15");
}

/// The operation is chosen by X-Amz-Target: a signature that does not
/// cover it would let anyone who sees one signed request replay it as any
/// other operation. It is refused, as is one without X-Amz-Date signed;
/// the same request with every header signed passes.
#[test]
fn a_signature_that_does_not_cover_x_amz_target_is_refused() {
    let server = ServerProcess::start();
    let key = admin_key(&server);
    let now = edgedeploy::clock::now_epoch().0;
    let (status, body) = call_signed(&server, &key, now, "CodeDeploy_20141006.ListApplications", &[]);
    assert_eq!((status, &body["applications"]), (200, &json!([])), "{body}");
    for (target, unsigned) in [
        ("CodeDeploy_20141006.ListApplications", "x-amz-target"),
        ("CodeDeploy_20141006.DeleteApplication", "x-amz-target"),
        ("CodeDeployCommandService_v20141006.PollHostCommand", "x-amz-target"),
        ("CodeDeploy_20141006.ListApplications", "x-amz-date"),
    ] {
        let (status, body) = call_signed(&server, &key, now, target, &[unsigned]);
        assert_eq!(status, 403, "{target} with {unsigned} unsigned: {body}");
        assert_eq!(body["__type"], "InvalidSignatureException", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&format!("'{unsigned}' must be a 'SignedHeader'")), "{message}");
    }
}

/// The YAML of an agent configuration file.
fn read_agent_config(path: &std::path::Path) -> serde_yaml::Mapping {
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("reading the agent configuration")).expect("YAML")
}

fn yaml_str<'a>(config: &'a serde_yaml::Mapping, key: &str) -> &'a str {
    config.get(key).and_then(serde_yaml::Value::as_str).unwrap_or_else(|| panic!("{key} missing in {config:?}"))
}

#[test]
fn register_instance_writes_a_private_agent_config_with_an_instance_key() {
    let server = ServerProcess::start();
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let config_path = server.work_dir().join("agent.yml");
    let config_arg = config_path.to_str().unwrap();
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "pi-1",
        "--tag",
        "env=prod",
        "--tag",
        "role=web",
        "--agent-config",
        config_arg,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let arn = "arn:aws:codedeploy:us-east-1:000000000000:instance/pi-1";
    assert!(String::from_utf8_lossy(&out.stdout).contains(arn));

    assert_eq!(std::fs::metadata(&config_path).unwrap().permissions().mode() & 0o777, 0o600);
    let config = read_agent_config(&config_path);
    assert_eq!(yaml_str(&config, "deploy_control_endpoint"), server.endpoint());
    assert_eq!(yaml_str(&config, "s3_endpoint_override"), server.endpoint());
    assert_eq!(yaml_str(&config, "host_identifier"), arn);
    assert_eq!(yaml_str(&config, "region"), "us-east-1");
    assert!(config.get("root_dir").is_none(), "root_dir is left to the user");
    let (key_id, secret) = (yaml_str(&config, "aws_access_key_id"), yaml_str(&config, "aws_secret_access_key"));
    assert_ne!(key_id, admin_key(&server).0);

    let info = server.boto3_ok("emit(client().get_on_premises_instance(instanceName='pi-1')['instanceInfo'])");
    assert_eq!(info["instanceArn"], arn);
    assert_eq!(info["iamSessionArn"], "arn:aws:sts::000000000000:assumed-role/edgedeploy/pi-1");
    assert_eq!(info["tags"], json!([{"Key": "env", "Value": "prod"}, {"Key": "role", "Value": "web"}]));

    let instance_credentials = server.work_dir().join("instance-credentials");
    write_credentials(&instance_credentials, key_id, secret);
    let refused = server.boto3_ok_as("emit(error_of(client().list_applications))", &instance_credentials);
    assert_eq!((&refused[0], &refused[1]), (&json!("AccessDeniedException"), &json!(403)), "{refused}");

    let again = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "pi-1",
        "--agent-config",
        server.work_dir().join("other.yml").to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already registered"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!server.work_dir().join("other.yml").exists());

    let existing = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "pi-2",
        "--agent-config",
        config_arg,
    ]);
    assert!(
        String::from_utf8_lossy(&existing.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&existing.stderr)
    );
    let listed = server.boto3_ok("emit(client().list_on_premises_instances()['instanceNames'])");
    assert_eq!(listed, json!(["pi-1"]), "a refused registration leaves nothing behind");

    server.boto3_ok("emit(client().deregister_on_premises_instance(instanceName='pi-1'))");
    let refused = server.boto3_ok_as("emit(error_of(client().list_applications))", &instance_credentials);
    assert_eq!(refused[0], "UnrecognizedClientException", "deregistering deleted the instance's key: {refused}");
}

#[test]
fn register_instance_uses_the_endpoint_given_and_needs_one() {
    let server = ServerProcess::start();
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let config_path = server.work_dir().join("agent.yml");
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "gw-7",
        "--endpoint",
        "https://deploy.example:8443",
        "--region",
        "eu-west-1",
        "--agent-config",
        config_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = read_agent_config(&config_path);
    assert_eq!(yaml_str(&config, "deploy_control_endpoint"), "https://deploy.example:8443");
    assert_eq!(yaml_str(&config, "host_identifier"), "arn:aws:codedeploy:eu-west-1:000000000000:instance/gw-7");
    assert_eq!(yaml_str(&config, "region"), "eu-west-1");

    let fresh = server.work_dir().join("fresh-data");
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        fresh.to_str().unwrap(),
        "--name",
        "gw-8",
        "--agent-config",
        server.work_dir().join("gw-8.yml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--endpoint"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "bad name",
        "--agent-config",
        server.work_dir().join("bad.yml").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn devices_registered_with_tags_are_found_by_tag_filters() {
    let server = ServerProcess::start();
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    for (name, env, role) in
        [("pi-1", "prod", "web"), ("pi-2", "prod", "db"), ("pi-3", "dev", "web"), ("pi-4", "dev", "db")]
    {
        let config = server.work_dir().join(format!("{name}.yml"));
        let out = server.edgedeploy(&[
            "register-instance",
            "--data-dir",
            &data_dir,
            "--name",
            name,
            "--tag",
            &format!("env={env}"),
            "--tag",
            &format!("role={role}"),
            "--agent-config",
            config.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = server.boto3_ok(
        r#"
        cd = client()
        def names(*filters):
            return cd.list_on_premises_instances(registrationStatus="Registered", tagFilters=list(filters))["instanceNames"]
        emit({
            "prod": names({"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}),
            "web": names({"Value": "web", "Type": "VALUE_ONLY"}),
            "prod_or_web": names({"Key": "env", "Value": "prod", "Type": "KEY_AND_VALUE"}, {"Value": "web", "Type": "VALUE_ONLY"}),
            "has_role": names({"Key": "role", "Type": "KEY_ONLY"}),
            "none": names({"Key": "zone", "Type": "KEY_ONLY"}),
        })
        "#,
    );
    assert_eq!(out["prod"], json!(["pi-1", "pi-2"]));
    assert_eq!(out["web"], json!(["pi-1", "pi-3"]));
    assert_eq!(out["prod_or_web"], json!(["pi-1", "pi-2", "pi-3"]));
    assert_eq!(out["has_role"], json!(["pi-1", "pi-2", "pi-3", "pi-4"]));
    assert_eq!(out["none"], json!([]));
}

/// Tags follow CodeDeploy's constraints (Key 1 to 128 characters, Value 0
/// to 256) and refuse control characters, which would forge lines in logs
/// and listings. Each refusal carries the model's exception and names the
/// tag; the instance's tags are unchanged afterwards.
#[test]
fn tags_with_control_characters_or_beyond_codedeploy_limits_are_refused() {
    let server = ServerProcess::start();
    let out = server.boto3_ok(
        r#"
        cd = client()
        cd.register_on_premises_instance(instanceName="pi-1", iamSessionArn="arn:aws:sts::000000000000:assumed-role/d/pi-1")
        cd.add_tags_to_on_premises_instances(instanceNames=["pi-1"], tags=[{"Key": "env", "Value": "prod"}])
        cases = {
            "newline_in_key": [{"Key": "env\nrole", "Value": "x"}],
            "escape_in_value": [{"Key": "env", "Value": "\x1b[31mprod"}],
            "nul_in_value": [{"Key": "env", "Value": "a\x00b"}],
            "key_129": [{"Key": "k" * 129, "Value": "x"}],
            "value_257": [{"Key": "env", "Value": "v" * 257}],
            "empty_key": [{"Key": "", "Value": "x"}],
        }
        errors = {case: error_of(cd.add_tags_to_on_premises_instances, instanceNames=["pi-1"], tags=tags)
                  for case, tags in cases.items()}
        errors["filter_with_newline"] = error_of(cd.list_on_premises_instances,
                                                 tagFilters=[{"Key": "env\n", "Type": "KEY_ONLY"}])
        cd.create_application(applicationName="shop")
        errors["group_filter_with_cr"] = error_of(cd.create_deployment_group, applicationName="shop",
            deploymentGroupName="web", serviceRoleArn="arn:aws:iam::000000000000:role/cd",
            onPremisesInstanceTagFilters=[{"Key": "env", "Value": "prod\r", "Type": "KEY_AND_VALUE"}])
        ok = cd.add_tags_to_on_premises_instances(instanceNames=["pi-1"], tags=[{"Key": "k" * 128, "Value": "v" * 256}])
        emit({"errors": errors, "tags": cd.get_on_premises_instance(instanceName="pi-1")["instanceInfo"]["tags"]})
        "#,
    );
    let errors = &out["errors"];
    for (case, exception, needle) in [
        ("newline_in_key", "InvalidTagException", "control character"),
        ("escape_in_value", "InvalidTagException", "control character"),
        ("nul_in_value", "InvalidTagException", "control character"),
        ("key_129", "InvalidTagException", "longer than 128"),
        ("value_257", "InvalidTagException", "longer than 256"),
        ("empty_key", "InvalidTagException", "non-empty Key"),
        ("filter_with_newline", "InvalidTagFilterException", "control character"),
        ("group_filter_with_cr", "InvalidTagException", "control character"),
    ] {
        assert_eq!(errors[case][0], exception, "{case}: {}", errors[case]);
        assert_eq!(errors[case][1], 400, "{case}");
        let message = errors[case][2].as_str().unwrap();
        assert!(
            message.contains(needle) && !message.contains('\n') && !message.contains('\u{1b}'),
            "{case}: {message}"
        );
    }
    let tags = out["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.contains(&json!({"Key": "env", "Value": "prod"})), "unchanged by the refusals: {tags:?}");
    // The same rules on the command line.
    let data_dir = server.data_dir().to_str().unwrap().to_string();
    let config = server.work_dir().join("dev.yml");
    let out = server.edgedeploy(&[
        "register-instance",
        "--data-dir",
        &data_dir,
        "--name",
        "dev-1",
        "--tag",
        "env=prod\nforged: line",
        "--agent-config",
        config.to_str().unwrap(),
        "--endpoint",
        server.endpoint(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("control character"), "{stderr}");
    assert!(!config.exists());
}
