#!/usr/bin/env python3
# Validate diskforge run reports against docs/report.schema.json.
# usage: pipeline_check_report.py REPORT.json...   (exit 0: all valid)
#        pipeline_check_report.py --step RESULT.json...   (one step's
#        object, as `diskforge step --result` writes it: $defs/step)
import json, os, sys
import jsonschema

here = os.path.dirname(os.path.abspath(__file__))
schema_path = os.path.join(here, '..', '..', 'docs', 'report.schema.json')
with open(schema_path) as f:
    schema = json.load(f)
paths = sys.argv[1:]
if paths[:1] == ['--step']:
    paths = paths[1:]
    schema = {'$schema': schema['$schema'], '$defs': schema['$defs'],
              '$ref': '#/$defs/step'}
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for path in paths:
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        doc = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as e:
        print(f'{path}: not valid JSON: {e}', file=sys.stderr)
        bad += 1
        continue
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        print(f'{path}: {"/".join(map(str, e.path))}: {e.message}', file=sys.stderr)
    bad += bool(errors)
sys.exit(1 if bad else 0)
