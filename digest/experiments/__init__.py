"""A/B tests of a digest: who gets which variant, what happened, and what it means.

- `assign`: a keyed hash puts each subscriber in the test (and in one variant) or in the
  rest of the list, the same way every time;
- `variants`: renders each variant (template, subject, preheader, sender name) once per
  topic mix;
- `results`: counts each delivery row once from the provider's events;
- `stats`: intervals, tests and the verdict (statsmodels and scipy);
- `report`: the verdict as a table, JSON and a self-contained HTML page;
- `winner`: the decision, taken once at the end of the wait, and the send to the rest.
"""
