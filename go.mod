module github.com/cancelio/cancelio

go 1.26
