"""The same security settings reach kafka-python, aiokafka and Faust, each in its own names."""

from __future__ import annotations

import ssl

import faust
import pytest

from loopline.schemas import ConfigError
from loopline.streams.connections import aiokafka_options, faust_options, kafka_options
from loopline.streams.local import tls
from loopline.streams.settings import Settings


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory) -> str:
    return str(tls.generate(tmp_path_factory.mktemp("tls"), "127.0.0.1").ca_file)


def sasl_ssl(ca_file: str, **extra) -> Settings:
    return Settings(
        kafka_bootstrap="a:9093,b:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="ana",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca_file,
        **extra,
    )


def test_plaintext_is_the_default_everywhere():
    settings = Settings(kafka_bootstrap="a:9092,b:9092")
    assert kafka_options(settings) == {
        "bootstrap_servers": ["a:9092", "b:9092"],
        "security_protocol": "PLAINTEXT",
    }
    assert aiokafka_options(settings)["security_protocol"] == "PLAINTEXT"
    assert faust_options(settings) == {"broker": "kafka://a:9092;kafka://b:9092"}


def test_sasl_ssl_reaches_kafka_python(ca_file):
    options = kafka_options(sasl_ssl(ca_file))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("ana", "s3cret")
    assert options["ssl_cafile"] == ca_file
    assert options["ssl_check_hostname"] is True


def test_sasl_ssl_reaches_aiokafka_with_a_context_that_trusts_the_ca(ca_file):
    options = aiokafka_options(sasl_ssl(ca_file, kafka_ssl_check_hostname=False))
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert any(cert["subject"] for cert in context.get_ca_certs())


def test_sasl_ssl_reaches_faust_as_credentials(ca_file):
    credentials = faust_options(sasl_ssl(ca_file))["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.username == "ana"


def test_tls_alone_reaches_faust_as_ssl_credentials(ca_file):
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file)
    assert isinstance(faust_options(settings)["broker_credentials"], faust.SSLCredentials)
    assert "sasl_mechanism" not in kafka_options(settings)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (dict(kafka_security_protocol="SASL_SSL"), "LOOPLINE_KAFKA_SASL_MECHANISM"),
        (
            dict(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN"),
            "LOOPLINE_KAFKA_SASL_USERNAME",
        ),
        (dict(kafka_sasl_mechanism="PLAIN"), "set it to SASL_SSL"),
        (
            dict(kafka_security_protocol="SSL", kafka_ssl_cafile="/nowhere/ca.pem"),
            "no such file",
        ),
    ],
)
def test_incomplete_security_settings_say_what_is_missing(settings, says):
    with pytest.raises(ConfigError, match=says):
        kafka_options(Settings(**settings))
