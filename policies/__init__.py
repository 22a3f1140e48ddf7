"""Pure decision logic: no faust, no Kafka client. Plain data in, decisions with explanations out."""
