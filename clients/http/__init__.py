"""The HTTP gateway's parts: routes (`api`), request policy (`guard`), JSON bodies
(`jsonbody`) and the server (`server`). The process is `python -m clients.gateway`."""
