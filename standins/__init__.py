"""Local HTTP stand-ins for services that cannot run here (Pinecone, Vertex AI).

They speak the documented REST APIs closely enough that the real SDKs talk to them
unchanged; tests and benchmarks use them, production never does.
"""
