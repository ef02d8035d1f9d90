"""``gptrl web``: a bundle's policy as a static web page (onnxruntime-web runs the stateful graph, MuJoCo's
WebAssembly build steps the env, three.js draws it), and a server for it on 127.0.0.1. No torch: the page's graph
is built from the bundle's numpy weights by ``gptrl.graph`` and checked against the folder's policy.onnx."""

from gptrl.web.site import ENV_XML, NODE_MODULES, NPM_FILES, SITE_FILE, build_site, make_server, serve

__all__ = ["ENV_XML", "NODE_MODULES", "NPM_FILES", "SITE_FILE", "build_site", "make_server", "serve"]
