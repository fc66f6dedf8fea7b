"""Encoder worker: ingest queue -> micro-batched ONNX encoding -> index queue; encode RPC."""
