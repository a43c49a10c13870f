"""Deploys one model with Alibaba's PAI Python SDK (``alipai`` 0.4.13, import name ``pai``).

Run by ``tests/serving/test_deployments_remote.py::test_create_service_body_matches_alipai`` in a venv of its
own that holds alipai (``--no-deps``) and what its import needs, never the project. alipai builds
every request itself (``Model.deploy`` -> ``_build_service_config`` -> ``ServiceAPI.create``, then
``Predictor.wait_for_ready``, gateway wait included); only two things are swapped, so that it talks
to the recording stand-in on 127.0.0.1: the host ``ClientFactory.get_endpoint`` returns, and plain
HTTP as the protocol. Credentials are plain access keys.

    python alipai_driver.py '<json: eas_host, region, access_key_id, access_key_secret, model_data,
        service_name, processor, spec_options ({dotted key: value} for InferenceSpec.add_option),
        deploy (keyword arguments of Model.deploy)>'

Prints one JSON line: the hosts alipai would have dialed (public and VPC) and what deploy returned.
"""

import json
import sys


def main(spec):
    from alibabacloud_credentials.models import Config as CredentialConfig
    from pai.api.client_factory import ClientFactory
    from pai.common.consts import Network
    from pai.model import InferenceSpec, Model
    from pai.session import Session

    would_dial = {
        "public": ClientFactory.get_endpoint("pai-eas", spec["region"]),
        "vpc": ClientFactory.get_endpoint("pai-eas", spec["region"], network=Network.VPC),
    }
    create_client = ClientFactory.create_client.__func__

    def local_client(cls, service_name, region_id, credential_client, network=None, **kwargs):
        return create_client(cls, service_name, region_id, credential_client, network=network, protocol="http", **kwargs)

    ClientFactory.get_endpoint = classmethod(lambda cls, service_name, region_id, network=None: spec["eas_host"])
    ClientFactory.create_client = classmethod(local_client)

    session = Session(
        region_id=spec["region"],
        workspace_id="1",
        credential_config=CredentialConfig(
            type="access_key", access_key_id=spec["access_key_id"], access_key_secret=spec["access_key_secret"]
        ),
        network="PUBLIC",
    )
    # As alipai's own InferenceSpec.add_option example: the processor, then dotted options. A spec
    # without a "metadata" key is taken for several specs keyed by method (_is_multiple_inference_spec)
    # and fails, so it starts with metadata.instance, which deploy() sets to instance_count anyway.
    inference_spec = InferenceSpec(processor=spec["processor"])
    inference_spec.add_option("metadata.instance", spec["deploy"].get("instance_count", 1))
    for key, value in spec["spec_options"].items():
        inference_spec.add_option(key, value)
    model = Model(model_data=spec["model_data"], inference_spec=inference_spec, session=session)
    predictor = model.deploy(service_name=spec["service_name"], wait=True, **spec["deploy"])
    print(json.dumps({"would_dial": would_dial, "service_name": predictor.service_name,
                      "status": predictor.service_status}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
