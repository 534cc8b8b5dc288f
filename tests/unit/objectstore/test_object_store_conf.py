"""The s3a properties come from Settings into build_spark and spark-submit, keys never."""

from __future__ import annotations

from sf311.settings import load_settings
from sf311.submit import spark_submit_command

PROVIDER = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"


def test_a_local_lake_sets_no_s3a_property() -> None:
    settings = load_settings(lake_path="/tmp/lake", checkpoint_path="/tmp/checkpoints")
    assert settings.object_store_conf() == {}
    assert "--conf" not in spark_submit_command(settings, "stream")


def test_an_s3a_lake_on_a_compatible_store_gets_its_endpoint_and_env_credentials() -> None:
    settings = load_settings(
        lake_path="s3a://lake/sf311",
        checkpoint_path="s3a://lake/checkpoints",
        s3_endpoint="http://127.0.0.1:9000",
        s3_path_style_access=True,
        s3_region="eu-west-1",
    )
    assert settings.object_store_conf() == {
        "spark.hadoop.fs.s3a.aws.credentials.provider": PROVIDER,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.endpoint.region": "eu-west-1",
    }


def test_aws_itself_needs_no_endpoint_and_only_the_checkpoints_may_be_on_s3a() -> None:
    settings = load_settings(lake_path="/tmp/lake", checkpoint_path="s3a://lake/checkpoints")
    assert settings.object_store_conf() == {
        "spark.hadoop.fs.s3a.aws.credentials.provider": PROVIDER,
        "spark.hadoop.fs.s3a.path.style.access": "false",
    }


def test_spark_submit_carries_the_properties_but_never_the_keys(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-SHOULD-NOT-LEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-should-not-leak")
    settings = load_settings(
        lake_path="s3a://lake/sf311",
        s3_endpoint="https://store.internal",
        s3_path_style_access=True,
    )
    argv = spark_submit_command(settings, "stream")
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert confs == [f"{k}={v}" for k, v in settings.object_store_conf().items()]
    assert "spark.hadoop.fs.s3a.connection.ssl.enabled=true" in confs
    joined = " ".join(argv)
    assert "SHOULD-NOT-LEAK" not in joined and "should-not-leak" not in joined
    assert argv[-1].endswith("jobs/stream.py")
